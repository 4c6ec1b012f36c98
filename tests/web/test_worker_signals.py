"""A stop signal reaches a gunicorn worker that is still starting (in ``post_fork``).

Before ``init_signals`` a forked worker has the master's handler, which queues the signal for a
master that is not in this process: the signal was lost and the worker served on. The test holds
a real worker inside ``post_fork`` (a config that wraps the repo's own), signals it there, lets it
go, and expects it gone and replaced.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.support import GUNICORN, ROOT, STARTUP_BOUND, Server, wait_until

HOLD = '''
import os
exec(compile(open({conf!r}).read(), {conf!r}, "exec"))
from tests.support import STARTUP_BOUND, wait_until  # the repo root is on gunicorn's path
_repo_post_fork = post_fork


def post_fork(server, worker):
    _repo_post_fork(server, worker)
    gate = os.environ["TEST_POST_FORK_GATE"]
    if not os.path.exists(gate):  # only the first worker is held; its replacement starts freely
        open(f"{{gate}}.{{os.getpid()}}", "w").close()
        wait_until(lambda: os.path.exists(gate), STARTUP_BOUND, "the test to open the post_fork gate", interval=0.01)
'''


def test_a_worker_signalled_during_post_fork_stops_and_is_replaced(tmp_path: Path) -> None:
    conf = tmp_path / "hold.conf.py"
    conf.write_text(HOLD.format(conf=str(ROOT / "gunicorn.conf.py")))
    gate = tmp_path / "gate"
    server = Server(env={"TEST_POST_FORK_GATE": str(gate)}, workers=1, args=["-c", str(conf)],
                    log_path=tmp_path / "gunicorn.log")
    server._log = (tmp_path / "gunicorn.log").open("wb")  # closed by stop()
    server.proc = subprocess.Popen([GUNICORN, *server.args], cwd=ROOT, env=server.env, stdout=server._log,
                                   stderr=subprocess.STDOUT)
    try:
        held = wait_until(lambda: list(tmp_path.glob("gate.*")), STARTUP_BOUND, "a worker held in post_fork")
        worker = int(held[0].suffix[1:])
        os.kill(worker, signal.SIGTERM)  # while it is still in post_fork
        gate.touch()
        wait_until(lambda: worker not in server.worker_pids(), 30, "the signalled worker to be gone")
        server.wait("/health", timeout=STARTUP_BOUND)  # its replacement serves
        assert worker not in server.worker_pids()
    finally:
        server.stop()
