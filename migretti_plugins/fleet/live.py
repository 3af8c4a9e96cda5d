"""The fleet's live lines on a terminal: one line per running member, redrawn in place.

::

    fleet tenants: 7 of 20 done, 1 failed, 4 running
      tenant_08  applying [2/3] 0002 add_index  3s
      tenant_09  waiting for the lock  12s
      tenant_10  connecting  0s
      tenant_11  applying [1/3] 0001 add_users  0s

The block sits at the bottom of the terminal (stderr, where ``mg apply``'s own progress line
goes, see ``migretti_plugins.output.progress``). Every line printed while it is shown (a member's
results, its errors, the fleet's events) is written above it: the block is erased, the line
written and the block drawn again, under the lock of ``streams``, so nothing ever lands
inside it. It is redrawn every second for the elapsed times, erased for good before the
summary. Only on a terminal, and never with ``--format json`` or ``--json-log``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from migretti_core.durations import format_elapsed
from migretti_core.messages import printable
from migretti_core.types import Event
from migretti_plugins.fleet import streams

REDRAW_SECONDS = 1.0


@dataclass
class _Row:
    name: str
    state: str = "running"
    started: float = field(default_factory=time.monotonic)


def _size(stream: TextIO) -> tuple[int, int]:
    """Columns and lines of the terminal behind ``stream`` (80x24 when unknown)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 80, 24
    return size.columns or 80, size.lines or 24


def state_of(event: Event) -> str | None:
    """What a member's event says it is doing now (None: no change)."""
    if event.name == "migration.started":
        verb = "rolling back" if event.fields.get("direction") == "down" else "applying"
        return f"{verb} {event.message}"
    if event.name == "lock.waiting":
        return "waiting for the lock"
    if event.name == "lock.acquired":
        return "running"
    if event.name == "seed.started":
        return f"seeding {event.fields.get('seed', '')}".rstrip()
    return None


class Board:
    """The block of live lines; every drawing happens under ``streams``' write lock."""

    def __init__(self, stream: TextIO, fleet: str, total: int) -> None:
        self.stream = stream
        self.fleet = fleet
        self.total = total
        self.done = 0
        self.failed = 0
        self.shown = 0  # lines of the block on the screen, the cursor just below them
        self.held = False  # an unfinished line is on the screen: draw nothing below it
        self._rows: dict[int, _Row] = {}
        self._rows_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="mg-fleet-live", daemon=True)

    # --- what the members do (any thread) ---------------------------------------------------

    def started(self, index: int, name: str) -> None:
        with self._rows_lock:
            self._rows[index] = _Row(printable(name))
        self.redraw()

    def update(self, index: int, state: str) -> None:
        with self._rows_lock:
            row = self._rows.get(index)
            state = printable(state)
            if row is None or row.state == state:
                return
            row.state = state
        self.redraw()

    def finished(self, index: int, ok: bool) -> None:
        with self._rows_lock:
            self._rows.pop(index, None)
            self.done += 1
            self.failed += 0 if ok else 1
        self.redraw()

    # --- drawing ------------------------------------------------------------------------------

    def lines(self, columns: int, height: int) -> list[str]:
        now = time.monotonic()
        with self._rows_lock:
            rows = [self._rows[i] for i in sorted(self._rows)]
            done, failed = self.done, self.failed
        head = f"fleet {printable(self.fleet)}: {done} of {self.total} done"
        if failed:
            head += f", {failed} failed"
        head += f", {len(rows)} running"
        room = max(height - 2, 1)  # the block must never scroll off the top of the screen
        shown = rows if len(rows) <= room else rows[: room - 1]
        width = max((len(r.name) for r in shown), default=0)
        out = [head]
        for row in shown:
            elapsed = format_elapsed(now - row.started)
            out.append(f"  {row.name.ljust(width)}  {row.state}  {elapsed}")
        if len(shown) < len(rows):
            out.append(f"  ... and {len(rows) - len(shown)} more running")
        # A line as wide as the terminal would wrap and could not be erased line by line.
        cut = max(columns - 4, 0)
        return [line if len(line) < columns else line[:cut] + "..." for line in out]

    def erase_text(self) -> str:
        """Erase the block: back to its first line, clear to the end of the screen.

        ``\\r`` first: something (the terminal's own ``^C``) may have moved the cursor right.
        """
        count, self.shown = self.shown, 0
        return f"\r\x1b[{count}A\x1b[J" if count else ""

    def draw_text(self) -> str:
        if self._stopped.is_set() or self.held:
            return ""
        columns, height = _size(self.stream)
        lines = self.lines(columns, height)
        self.shown = len(lines)
        return "".join(f"{line}\n" for line in lines)

    def erase(self) -> None:
        """Called with the write lock held, before a line is written above the block."""
        text = self.erase_text()
        if text:
            self.stream.write(text)
            self.stream.flush()

    def hold(self) -> None:
        """Called with the write lock held, after an unfinished line was written."""
        self.held = True

    def draw(self) -> None:
        """Called with the write lock held, after a line was written above the block."""
        self.held = False
        text = self.draw_text()
        if text:
            self.stream.write(text)
            self.stream.flush()

    def redraw(self) -> None:
        with streams.write_lock():
            text = self.erase_text() + self.draw_text()
            if text:
                try:
                    self.stream.write(text)
                    self.stream.flush()
                except (OSError, ValueError):  # the terminal went away
                    self._stopped.set()

    def _tick(self) -> None:
        while not self._stopped.wait(REDRAW_SECONDS):
            self.redraw()

    # --- the block's life ---------------------------------------------------------------------

    def start(self) -> None:
        streams.set_overlay(self)
        self._thread.start()
        self.redraw()

    def stop(self) -> None:
        """Erase the block for good (the summary follows)."""
        self._stopped.set()
        with streams.write_lock():
            streams.set_overlay(None)
            with contextlib.suppress(OSError, ValueError):
                self.erase()
        self._thread.join(REDRAW_SECONDS * 2)


def wanted(stream: TextIO, fmt: str, json_log: bool, environ: dict[str, str]) -> bool:
    """Live lines only on a terminal, for people: not for JSON, not for a dumb terminal."""
    if fmt == "json" or json_log:
        return False
    if environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False


__all__: Sequence[str] = ("Board", "state_of", "wanted")
