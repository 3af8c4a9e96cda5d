"""Per-thread stdout and stderr, so members running at once never mix their output.

While a fleet runs, ``sys.stdout`` and ``sys.stderr`` are routers: a write from a member's
thread goes to that member's sink, which passes on whole lines only, prefixed with the
member's name, under one lock; any other thread's writes pass on as whole lines too
(print() writes a line and its newline apart, and no member's line may land between them).
A member never sees a terminal (no live progress line redrawn by several threads at once);
the fleet's own live lines (``live``) are an overlay: every write to a terminal erases them
first and draws them again after.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

from migretti_core.messages import printable

_local = threading.local()
_write_lock = threading.Lock()
# Unfinished lines of threads that are not running a member, by (thread, stream): print()
# writes a line and its newline separately, and a member's line must never land between them.
_pending: dict[tuple[int, str], str] = {}


class Overlay(Protocol):
    """Lines kept at the bottom of the terminal while a fleet runs (``live.Board``)."""

    def erase(self) -> None: ...

    def draw(self) -> None: ...

    def hold(self) -> None: ...


_overlay: Overlay | None = None


def set_overlay(overlay: Overlay | None) -> None:
    """Install (or remove) the overlay; call with ``write_lock()`` held or before the run."""
    global _overlay
    _overlay = overlay


def write_lock() -> threading.Lock:
    """The lock every write to the real streams takes while a fleet runs."""
    return _write_lock


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False


def _out(real: TextIO, text: str) -> None:
    """Write ``text`` to a real stream, the write lock held: above the overlay, if any."""
    overlay = _overlay
    if overlay is None or not _is_terminal(real):
        real.write(text)
        return
    overlay.erase()
    real.write(text)
    real.flush()
    if text.endswith("\n"):
        overlay.draw()
    else:  # an unfinished line stays the last thing on the screen until it ends
        overlay.hold()


class Sink:
    """What one member printed: stderr lines pass on live, stdout is kept (and shown live
    unless ``keep_stdout``)."""

    def __init__(self, prefix: str, keep_stdout: bool, stderr_prefix: str | None = None) -> None:
        # A member's name may hold control characters (a name from ``query``): escaped, as
        # every name mg writes to a terminal is.
        prefix = printable(prefix)
        self.prefix = prefix
        # With --json-log stderr carries JSON lines (their "target" names the member), which a
        # prefix would break; the results on stdout keep the member's name in front.
        self.stderr_prefix = prefix if stderr_prefix is None else stderr_prefix
        self.keep_stdout = keep_stdout
        self.stdout: list[str] = []
        self._partial = {"stdout": "", "stderr": ""}
        # The first write to the real streams that failed (a full disk, a closed pipe): the
        # member goes on, as mg does on one database, and exits 1 at its end (``runner``).
        self.output_error: OSError | None = None

    def write(self, which: str, text: str, real: TextIO) -> None:
        if which == "stdout":
            self.stdout.append(text)
            if self.keep_stdout:
                return
        data = self._partial[which] + text
        lines = data.split("\n")
        self._partial[which] = lines.pop()
        if lines:
            self._emit(which, lines, real)

    def _emit(self, which: str, lines: list[str], real: TextIO) -> None:
        prefix = self.prefix if which == "stdout" else self.stderr_prefix
        text = "".join(f"{prefix}{line}\n" for line in lines)
        with _write_lock:
            try:
                _out(real, text)
                real.flush()
            except OSError as exc:
                if self.output_error is None:
                    self.output_error = exc

    def close(self, streams: dict[str, TextIO]) -> None:
        for which, rest in self._partial.items():
            if rest and not (which == "stdout" and self.keep_stdout):
                self._emit(which, [rest], streams[which])
            self._partial[which] = ""


class Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while a fleet runs."""

    def __init__(self, real: TextIO, which: str) -> None:
        super().__init__()
        self.real = real
        self.which = which

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.real, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.real, "errors", None)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        sink: Sink | None = getattr(_local, "sink", None)
        if sink is None:
            key = (threading.get_ident(), self.which)
            with _write_lock:
                head, newline, rest = (_pending.pop(key, "") + text).rpartition("\n")
                if rest:
                    _pending[key] = rest
                if newline:
                    _out(self.real, head + newline)
            return len(text)
        sink.write(self.which, text, self.real)
        return len(text)

    def flush(self) -> None:
        if getattr(_local, "sink", None) is None:
            with _write_lock:
                rest = _pending.pop((threading.get_ident(), self.which), "")
                if rest:
                    _out(self.real, rest)
                self.real.flush()

    def drain(self) -> None:
        """Write every thread's unfinished line: the run is over."""
        with _write_lock:
            for key in [key for key in _pending if key[1] == self.which]:
                _out(self.real, _pending.pop(key))
            self.real.flush()

    def isatty(self) -> bool:
        if getattr(_local, "sink", None) is not None:
            return False
        return self.real.isatty()

    def fileno(self) -> int:
        return self.real.fileno()


@contextmanager
def routed() -> Iterator[dict[str, TextIO]]:
    """Install the routers for the duration of a fleet run; yields the real streams."""
    real = {"stdout": sys.stdout, "stderr": sys.stderr}
    routers = [Router(real["stdout"], "stdout"), Router(real["stderr"], "stderr")]
    sys.stdout, sys.stderr = routers
    try:
        yield real
    finally:
        for router in routers:
            router.drain()
        sys.stdout, sys.stderr = real["stdout"], real["stderr"]


@contextmanager
def member_output(sink: Sink, streams: dict[str, TextIO]) -> Iterator[None]:
    """Route this thread's output to ``sink`` while the member runs."""
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = None
        sink.close(streams)


def locked_write(stream: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        with _write_lock:
            _out(stream, text)
            stream.flush()

    return write
