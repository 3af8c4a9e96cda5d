"""The live progress line on a terminal: the running migration and how long it has run.

``mg apply`` on a terminal shows ``[2/5] 01J... add_index  1m05s`` on stderr, redrawn every
second by a daemon thread, and erased before anything else is printed, so results and
messages never mix with it. Off a terminal nothing of it is printed. Imported only when a
migration starts on a terminal (``mg --help`` never pays for ``threading``).

Ctrl-C and SIGTERM erase the line before mg's own handling runs: the handlers are wrapped
while the line is shown and put back when it goes.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from migretti_core.durations import format_elapsed

REDRAW_SECONDS = 1.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_lock = threading.RLock()
_current: _Line | None = None


class _Line:
    """One shown progress line and the thread that keeps its elapsed time current."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.stopped = threading.Event()
        self.saved: dict[int, Any] = {}
        self.thread = threading.Thread(target=self._run, name="mg-progress", daemon=True)

    def draw(self) -> None:
        elapsed = time.monotonic() - self.started
        suffix = "" if elapsed < 1 else f"  {format_elapsed(elapsed)}"
        label = self.label
        import shutil

        room = shutil.get_terminal_size((80, 24)).columns - 1 - len(suffix)
        if len(label) > room:  # a wrapped line could not be erased with \r
            label = label[: max(room - 3, 0)] + "..."
        sys.stderr.write(f"\r\033[K{label}{suffix}")
        sys.stderr.flush()

    def _run(self) -> None:
        while not self.stopped.wait(REDRAW_SECONDS):
            with _lock:
                if self.stopped.is_set():
                    return
                try:
                    self.draw()
                except (OSError, ValueError):  # stderr closed under us
                    return


def show(label: str) -> None:
    """Show ``label`` as the running step, replacing any line shown before."""
    global _current
    with _lock:
        stop()
        line = _Line(label)
        line.draw()
        _current = line
        _wrap_signals(line)
        line.thread.start()


def stop() -> None:
    """Erase the line (if one is shown) and stop redrawing it."""
    global _current
    with _lock:
        line, _current = _current, None
        if line is None:
            return
        line.stopped.set()
        _restore_signals(line)
        try:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def _wrap_signals(line: _Line) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _SIGNALS:
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue
        line.saved[signum] = previous
        signal.signal(signum, _erasing(previous))


def _erasing(previous: Callable[[int, FrameType | None], Any]) -> Callable[..., Any]:
    def handler(signum: int, frame: FrameType | None) -> Any:
        stop()
        return previous(signum, frame)

    return handler


def _restore_signals(line: _Line) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in line.saved.items():
        signal.signal(signum, previous)
    line.saved.clear()
