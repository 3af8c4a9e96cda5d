"""Threads whose end can be waited for through a Ctrl-C.

On Python 3.11 a KeyboardInterrupt that lands inside ``Thread.join`` can leave the thread
marked as ended while it still runs (the interrupted join releases the lock the running
thread holds): every later ``join`` returns at once and ``is_alive`` says False. A fleet
interrupted that way printed its summary and exited while its members were still
committing. A ``Worker`` says it has finished through an ``Event``, which an interruption
does not corrupt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Worker(threading.Thread):
    """A daemon thread running ``target(*args)``; ``running`` and ``wait`` are safe to use
    after a Ctrl-C interrupted a wait."""

    def __init__(
        self, target: Callable[..., Any], args: tuple[Any, ...] = (), name: str = ""
    ) -> None:
        super().__init__(name=name or None, daemon=True)
        self._call = (target, args)
        self.finished = threading.Event()

    def run(self) -> None:
        target, args = self._call
        try:
            target(*args)
        finally:
            self.finished.set()

    def running(self) -> bool:
        return not self.finished.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the work is over; False if ``timeout`` seconds passed first."""
        return self.finished.wait(timeout)
