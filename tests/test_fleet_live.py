"""The fleet's live lines: the real ``mg`` on a pseudo-terminal, its output replayed on a
small terminal emulator to see the final screen; off a terminal, no escape sequence at all."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from migretti_core.testing import make_project, url_with_dbname, write_migration
from migretti_plugins.fleet.live import Board

MG = [sys.executable, "-m", "migretti_core"]
REPO = Path(__file__).resolve().parents[1]


class Screen:
    """Just enough of a terminal for mg's output: printable text, CR, LF (with scrolling),
    cursor up (CSI n A), erase line (CSI K) and erase below (CSI J). Any other escape
    sequence fails the test: mg must not send what it was not meant to."""

    TOKEN = re.compile(r"\x1b\[(\d*)([A-Za-z])|\x1b|[\r\n\x07\x08]|[^\x1b\r\n\x07\x08]+")

    def __init__(self, columns: int, lines: int) -> None:
        self.columns = columns
        self.height = lines
        self.rows: list[list[str]] = [[] for _ in range(lines)]
        self.scrolled: list[str] = []
        self.row = 0
        self.col = 0

    def feed(self, data: str) -> None:
        for match in self.TOKEN.finditer(data):
            text = match.group(0)
            if match.group(2) is not None:
                count = int(match.group(1) or 1)
                self._csi(match.group(2), count, text)
            elif text == "\x1b":
                near = data[match.start() :][:20]
                raise AssertionError(f"unexpected escape sequence near {near!r}")
            elif text == "\r":
                self.col = 0
            elif text == "\n":
                self._line_feed()
            elif text in ("\x07", "\x08"):
                self.col = max(self.col - 1, 0) if text == "\x08" else self.col
            else:
                for char in text:
                    self._put(char)

    def _csi(self, final: str, count: int, text: str) -> None:
        if final == "A":
            self.row = max(self.row - count, 0)
        elif final == "K":
            del self.rows[self.row][self.col :]
        elif final == "J":
            del self.rows[self.row][self.col :]
            for below in range(self.row + 1, self.height):
                self.rows[below] = []
        else:
            raise AssertionError(f"unexpected escape sequence {text!r}")

    def _line_feed(self) -> None:
        if self.row == self.height - 1:
            self.scrolled.append(self._text(self.rows.pop(0)))
            self.rows.append([])
        else:
            self.row += 1

    def _put(self, char: str) -> None:
        if self.col >= self.columns:  # auto-wrap
            self.col = 0
            self._line_feed()
        line = self.rows[self.row]
        line.extend(" " * (self.col - len(line) + 1))
        line[self.col] = char
        self.col += 1

    @staticmethod
    def _text(cells: list[str]) -> str:
        return "".join(cells).rstrip()

    def lines(self) -> list[str]:
        """Everything shown, scrolled-off lines included, trailing blank lines dropped."""
        shown = self.scrolled + [self._text(row) for row in self.rows]
        while shown and not shown[-1]:
            shown.pop()
        return shown


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MG_") and not (k.startswith("PG") and k != "PGTZ")
    }
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra or {})
    return env


def on_terminal(
    cwd: Path,
    *args: str,
    columns: int = 100,
    lines: int = 30,
    timeout: float = 120,
    interrupt_on: str | None = None,
) -> tuple[int, str]:
    """Run ``mg ARGS`` with stdin, stdout and stderr on one pseudo-terminal; with
    ``interrupt_on`` (a regular expression), press Ctrl-C (SIGINT to its process group)
    once output matching it shows."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    proc = subprocess.Popen(
        [*MG, *args],
        cwd=cwd,
        env=environment({"TERM": "xterm", "COLUMNS": str(columns), "LINES": str(lines)}),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other end is closed
                break
            if not data:
                break
            chunks.append(data)
            if interrupt_on is not None and re.search(interrupt_on.encode(), b"".join(chunks)):
                os.killpg(proc.pid, signal.SIGINT)
                interrupt_on = None
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def fleet(pg_url: str, tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """Four empty databases and a project whose fleet ``tenants`` lists them."""
    prefix = f"live_{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}_{n}" for n in range(1, 5)]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    root = tmp_path / "proj"
    make_project(root, pg_url, settings={"fleets": {"tenants": {"databases": names, "jobs": 2}}})
    try:
        yield root, names
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def test_live_lines_are_redrawn_in_place_then_give_way_to_the_summary(
    fleet: tuple[Path, list[str]], pg_url: str
) -> None:
    root, names = fleet
    write_migration(root, "0001", "quick", "CREATE TABLE quick (id bigint);")
    # Long enough that a redraw (once a second, in step with the block, not with the member)
    # lands while the member shows a second or more.
    write_migration(root, "0002", "slow", "SELECT pg_sleep(2.5);")
    broken = names[2]
    with psycopg.connect(url_with_dbname(pg_url, broken), autocommit=True) as conn:
        conn.execute("CREATE TABLE quick (id bigint)")

    code, output = on_terminal(root, "apply", "--fleet", "tenants", columns=200, lines=40)

    assert code == 1, output
    screen = Screen(200, 40)
    screen.feed(output)
    shown = screen.lines()
    # While it ran: the block's head and a line per running member with its migration and
    # elapsed time, redrawn in place (erased by moving the cursor back up, never scrolled).
    assert re.search(r"fleet tenants: \d of 4 done(, 1 failed)?, 2 running", output), output
    for name in (names[0], names[1]):
        assert re.search(rf"  {name}  applying \[2/2\] 0002 slow  [1-9]s\r?\n", output), output
    assert re.search(r"\r\x1b\[\d+A\x1b\[J", output), output
    # The final screen: every member's own lines, whole, then the summary; nothing of the
    # live block is left.
    assert not [line for line in shown if line.startswith("fleet tenants:")], shown
    assert not [line for line in shown if re.search(r"applying \[\d/2\]", line)], shown
    for name in names:
        if name != broken:
            assert f"{name}: applied 0001 quick" in "\n".join(shown), shown
            assert any(re.fullmatch(rf"{name}: applied 0002 slow \(\d+ ms\)", s) for s in shown)
    assert any(line.startswith(f"{broken}: mg: error:") for line in shown), shown
    start = next(i for i, line in enumerate(shown) if line.startswith("MEMBER"))
    table = shown[start:]
    assert table[0].split()[:2] == ["MEMBER", "RESULT"], shown
    rows = {line.split()[0]: line.split()[1] for line in table[1:5]}
    assert rows == {name: ("failed" if name == broken else "ok") for name in names}, shown
    assert table[5] == "3 of 4 succeeded", shown
    assert table[6:] == ["mg: warning: fleet tenants: 3 of 4 succeeded"], shown


def test_ctrl_c_leaves_the_summary_and_nothing_of_the_live_lines(
    fleet: tuple[Path, list[str]],
) -> None:
    root, names = fleet
    write_migration(root, "0001", "slow", "SELECT pg_sleep(60);")

    # Once a member has shown a second or more: a redraw may skip 1s when the machine is busy.
    code, output = on_terminal(
        root, "apply", "--fleet", "tenants", columns=200, lines=40, interrupt_on=r"slow  [1-9]\d*s"
    )

    assert code == 130, output
    screen = Screen(200, 40)
    screen.feed(output)
    shown = screen.lines()
    assert not [line for line in shown if line.startswith("fleet tenants:")], shown
    assert not [line for line in shown if "applying [1/1]" in line], shown
    start = next(i for i, line in enumerate(shown) if line.startswith("MEMBER"))
    rows = {line.split()[0]: line.split()[1] for line in shown[start + 1 : start + 5]}
    assert rows == {
        names[0]: "interrupted",
        names[1]: "interrupted",
        names[2]: "skipped",
        names[3]: "skipped",
    }, shown
    assert shown[start + 5] == "0 of 4 succeeded", shown


def test_without_a_terminal_there_is_no_escape_sequence(fleet: tuple[Path, list[str]]) -> None:
    root, names = fleet
    write_migration(root, "0001", "slow", "SELECT pg_sleep(1.2);")

    done = subprocess.run(
        [*MG, "apply", "--fleet", "tenants"],
        cwd=root,
        env=environment({"TERM": "xterm"}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert "\x1b" not in stream and "\r" not in stream, stream
    assert "running" not in done.stderr
    assert done.stdout.splitlines()[-1] == "4 of 4 succeeded"
    for name in names:
        assert re.search(rf"(?m)^{name}: applied 0001 slow \(\d+ ms\)$", done.stdout)


def test_json_on_a_terminal_has_no_live_lines(fleet: tuple[Path, list[str]]) -> None:
    root, _ = fleet
    write_migration(root, "0001", "quick", "SELECT 1;")

    code, output = on_terminal(root, "--json-log", "apply", "--fleet", "tenants")
    assert code == 0, output
    assert "\x1b" not in output
    code, output = on_terminal(root, "status", "--fleet", "tenants", "--format", "json")
    assert code == 0, output
    assert "\x1b" not in output


def test_the_block_fits_the_terminal() -> None:
    board = Board(io.StringIO(), "tenants", 30)
    for index in range(10):
        board.started(index, f"tenant_{index:02d}")
    board.update(3, "applying [1/2] 0001 " + "x" * 80)

    lines = board.lines(40, 8)

    assert lines[0] == "fleet tenants: 0 of 30 done, 10 running"
    assert len(lines) == 7  # with the cursor line below: the 8 lines, never scrolling
    assert lines[-1] == "  ... and 5 more running"
    assert all(len(line) < 40 for line in lines), lines
    assert lines[4].startswith("  tenant_03  applying [1/2] 0001 xxx") and lines[4].endswith("...")
