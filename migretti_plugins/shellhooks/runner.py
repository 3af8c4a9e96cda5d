"""Running one shell command for a hook: process group, timeout, output relay.

Kept apart from the ``shellhooks`` plugin so that ``mg`` does not import ``subprocess`` and
``selectors`` unless a hook actually runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Seconds a hook gets to exit after SIGTERM before its process group is killed.
KILL_GRACE = 2.0
# Seconds output is still relayed after the shell exited (a background child may hold it).
OUTPUT_GRACE = 1.0
# Bytes of one output line held before it is passed on anyway, as a piece of the line.
MAX_LINE = 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    """How one hook run ended: ``exit_code`` is None when it timed out or was killed."""

    exit_code: int | None
    duration_ms: int
    timed_out: bool = False
    signal_name: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self, timeout: float) -> str:
        if self.error is not None:
            return self.error
        if self.timed_out:
            return f"timed out after {format_seconds(timeout)}"
        if self.signal_name is not None:
            return f"was killed by {self.signal_name}"
        return f"failed with exit code {self.exit_code}"


def format_seconds(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"


def run_command(
    command: str,
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout: float,
    on_line: Callable[[str], None],
) -> Outcome:
    """Run ``command`` with ``/bin/sh -c``, relaying each output line to ``on_line``.

    On timeout or interruption the whole process group is terminated, then killed.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        timed_out = not _relay(proc, proc.stdout.fileno(), started + timeout, on_line)
    except BaseException:
        _terminate(proc)
        raise
    finally:
        proc.stdout.close()
    if timed_out:
        _terminate(proc)
    duration_ms = int((time.monotonic() - started) * 1000)
    code = proc.returncode
    if timed_out:
        return Outcome(None, duration_ms, timed_out=True)
    if code < 0:
        return Outcome(None, duration_ms, signal_name=_signal_name(-code))
    return Outcome(code, duration_ms)


def _relay(
    proc: subprocess.Popen[bytes], fd: int, deadline: float, on_line: Callable[[str], None]
) -> bool:
    """Pass output on until the shell exited and its output closed; False on timeout.

    A line longer than ``MAX_LINE`` bytes is passed on in pieces of at most that size, so
    a hook writing without newlines costs neither quadratic time nor unbounded memory.
    """
    pending = bytearray()
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if exited_at is None and _exited(proc):
                exited_at = now
            if exited_at is not None and now - exited_at > OUTPUT_GRACE:
                break
            if exited_at is None and now >= deadline:
                _flush(bytes(pending), on_line)
                return False
            wait = 0.2 if exited_at is not None else min(0.2, max(deadline - now, 0.0))
            if not selector.select(timeout=wait):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            # Only the new chunk is searched: what is pending holds no line end.
            cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
            if cut >= 0:
                pending += chunk[: cut + 1]
                _flush(bytes(pending), on_line)
                pending[:] = chunk[cut + 1 :]
            else:
                pending += chunk
            while len(pending) > MAX_LINE:
                piece = _piece_end(pending, MAX_LINE)
                _flush(bytes(pending[:piece]), on_line)
                del pending[:piece]
    _flush(bytes(pending), on_line)
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except subprocess.TimeoutExpired:
        return False
    return True


def _piece_end(data: bytearray, limit: int) -> int:
    """Where a piece of at most ``limit`` bytes ends, not inside a UTF-8 character."""
    end = limit
    while end > limit - 4 and data[end] & 0xC0 == 0x80:
        end -= 1
    return end if end > limit - 4 else limit


def _flush(data: bytes, on_line: Callable[[str], None]) -> None:
    if not data:
        return
    text = data.decode("utf-8", errors="replace")
    for line in re.split(r"\r\n|\n|\r", text.rstrip("\r\n")):
        on_line(line)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the shell exited, without reaping it.

    An unreaped shell keeps its pid, and with it the process group id, from being reused, so
    signalling the group can never reach an unrelated process.
    """
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the hook's process group, then SIGKILL whatever is left of it."""
    if proc.returncode is None:
        _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE
        while not _exited(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.returncode is not None:
        return  # reaped: its group id may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- running one configured hook ---------------------------------------------------------
