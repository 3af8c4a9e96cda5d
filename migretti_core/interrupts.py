"""Work that Ctrl-C (SIGTERM, SIGHUP) must not cut in half: the signal waits for its end."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

HELD_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold back Ctrl-C, SIGTERM and SIGHUP (their Python handlers) for the block, and deliver
    the first one that came once it is done, unless the block failed on its own.

    Only Python-level handlers can be held, and only in the main thread; elsewhere the block
    runs as it is. A clean-up that runs after a first Ctrl-C (removing a temporary server,
    dropping a scratch database) uses it, so a second Ctrl-C does not leave it half done.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[tuple[int, Callable[[int, Any], Any]]] = []
    kept: list[tuple[int, Callable[[int, Any], Any]]] = []

    def holder(handler: Callable[[int, Any], Any]) -> Callable[[int, Any], None]:
        def hold(signum: int, frame: Any) -> None:
            if not came:
                came.append((signum, handler))

        return hold

    for name in HELD_SIGNALS:
        signum = getattr(signal, name, None)
        handler = signal.getsignal(signum) if signum is not None else None
        if signum is not None and callable(handler):
            kept.append((signum, handler))
            signal.signal(signum, holder(handler))
    try:
        yield
    finally:
        for signum, handler in kept:
            signal.signal(signum, handler)
    if came:
        signum, handler = came[0]
        handler(signum, None)
