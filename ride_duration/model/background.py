"""A bounded queue drained off the request path by one thread per process: the prediction log's writer
and the shadow scorer.

The request path only offers (``put_nowait``: a full queue refuses, the caller counts the drop,
nothing waits). The thread is started in each process that serves (gunicorn's ``post_fork``, or
lazily on first use); under gevent's monkey-patching it is a greenlet and the queue is gevent's.
At exit (``atexit``; gunicorn's ``worker_exit`` runs it) what is queued is drained, within a bound.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import typing as t

STOP = None
"""The entry that tells the thread to finish what is queued and return."""


class Background:
    """Subclasses implement ``drain(entries, *args)``, the thread's loop (return on :data:`STOP`), and
    call :meth:`launch` from their own ``start``."""

    name = "background"

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.pid: int | None = None
        self.queue: queue.Queue[t.Any] = queue.Queue(queue_size)
        self.thread: threading.Thread | None = None

    def running_here(self) -> bool:
        return self.pid == os.getpid() and self.thread is not None and self.thread.is_alive()

    def launch(self, *args: t.Any) -> None:
        """A fresh queue (a fork's copy may hold the parent's entries) and this process's thread."""
        self.pid = os.getpid()
        self.queue = queue.Queue(self.queue_size)
        self.thread = threading.Thread(target=self.drain, args=(self.queue, *args), daemon=True, name=self.name)
        self.thread.start()
        atexit.register(self.stop)

    def drain(self, entries: queue.Queue[t.Any], *args: t.Any) -> None:
        raise NotImplementedError

    def offer(self, entry: t.Any) -> bool:
        """Queue ``entry`` without waiting; False when the queue is full (the caller counts the drop)."""
        try:
            self.queue.put_nowait(entry)
        except queue.Full:
            return False
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Drain what is queued and stop the thread (atexit)."""
        thread = self.thread
        if thread is None or not thread.is_alive() or self.pid != os.getpid():
            return
        try:
            self.queue.put(STOP, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)
