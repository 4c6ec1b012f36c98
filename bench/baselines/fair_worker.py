"""gunicorn's stock gevent worker plus one fair turn of the event loop per request (docs/performance.md).

The whole fix of issue 22, for any WSGI app, to reproduce it with a plain Flask app::

    gunicorn -c /dev/null -w 1 -k gevent bench.baselines.flask_const:app                       # before
    gunicorn -c /dev/null -w 1 -k bench.baselines.fair_worker.FairGeventWorker bench.baselines.flask_const:app

``gevent.sleep(0)`` in its place is not enough: gevent may resume a greenlet that sleeps with 0
before the loop polls for I/O again (for up to its 5 ms switch interval). A 0-second timer is
due only after that poll, so every other connection with a request waiting is read first.
"""

from gunicorn.workers.ggevent import GeventWorker

from ride_duration.web.worker import loop_turn  # the service's own turn (the one thing this adds)


class FairGeventWorker(GeventWorker):
    def handle_request(self, listener_name, req, sock, addr):
        loop_turn()
        return super().handle_request(listener_name, req, sock, addr)
