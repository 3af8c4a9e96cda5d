"""``Worker``: a fleet waits for its members through a Ctrl-C (Python 3.11's ``join``
could lose track of a thread the interruption landed in)."""

from __future__ import annotations

import signal
import threading

import pytest

from migretti_core.workers import Worker


def _ctrl_c_in(seconds: float) -> threading.Timer:
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(seconds, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    return timer


def test_a_worker_is_still_running_after_ctrl_c_interrupted_the_wait() -> None:
    release = threading.Event()
    worker = Worker(release.wait, name="member")
    worker.start()
    _ctrl_c_in(0.2)
    with pytest.raises(KeyboardInterrupt):
        while not worker.wait(0.01):
            pass
    assert worker.running()
    assert not worker.wait(0.2)  # the wait does not return before the work is over
    release.set()
    assert worker.wait(10)
    assert not worker.running()


def test_a_failing_worker_still_finishes() -> None:
    def fail() -> None:
        raise RuntimeError("member failed")

    hook = threading.excepthook
    threading.excepthook = lambda args: None
    try:
        worker = Worker(fail, name="member")
        worker.start()
        assert worker.wait(10)
    finally:
        threading.excepthook = hook
