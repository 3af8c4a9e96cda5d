"""The progress line of ``mg apply``: on a real terminal (pexpect), and its absence elsewhere."""

from __future__ import annotations

import io
import re
import signal
from pathlib import Path

import pexpect
import pytest

from migretti_core.testing import MG_COMMAND, Project, mg_env

SLOW = "SELECT pg_sleep(4.5);"


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    proj = Project(tmp_path / "proj", database_url)
    proj.add("0001", "slow_one", SLOW)
    return proj


def on_terminal(project: Project, *args: str, columns: int = 200) -> pexpect.spawn:
    child = pexpect.spawn(
        MG_COMMAND[0],
        [*MG_COMMAND[1:], *args],
        cwd=str(project.root),
        # the width comes from the terminal: not from a COLUMNS the runner may export
        env=mg_env({"COLUMNS": "", "LINES": ""}),
        encoding="utf-8",
        timeout=90,
        dimensions=(40, columns),
    )
    child.logfile_read = io.StringIO()
    return child


def finish(child: pexpect.spawn) -> tuple[int, str]:
    child.expect(pexpect.EOF)
    child.close()
    output: str = child.logfile_read.getvalue()
    assert isinstance(child.exitstatus, int), output
    return child.exitstatus, output


def test_a_single_long_migration_shows_its_elapsed_time(project: Project) -> None:
    child = on_terminal(project, "apply")
    code, output = finish(child)

    assert code == 0, output
    assert "[1/1] 0001 slow_one" in output
    assert "[1/1] [1/1]" not in output
    # Redrawn in place with the time it has run so far, at least at 1s, 2s and 3s.
    shown = re.findall(r"\r\x1b\[K\[1/1\] 0001 slow_one  (\d+)s", output)
    assert {"1", "2", "3"} <= set(shown), output
    # The line is erased before the result, which stands on a line of its own.
    assert re.search(r"\r\x1b\[K(\r\n)?applied 0001 slow_one \(\d+ ms\)", output), output


def test_each_migration_shows_once_with_its_position(project: Project) -> None:
    project.add("0002", "quick", "SELECT 1;")
    project.add("0003", "slow_two", "SELECT pg_sleep(1.5);")

    code, output = finish(on_terminal(project, "apply"))

    assert code == 0, output
    for label in ("[1/3] 0001 slow_one", "[2/3] 0002 quick", "[3/3] 0003 slow_two"):
        assert label in output
    assert not re.search(r"\[\d/3\] \[\d/3\]", output), output
    results = re.findall(r"applied (\d{4}) \w+ \(\d+ ms\)", output)
    assert results == ["0001", "0002", "0003"]


def test_a_narrow_terminal_gets_a_line_that_fits(project: Project) -> None:
    # Runs long enough that the redraw a second in lands well before it ends.
    project.add("0002", "a_migration_with_a_long_name_" + "x" * 60, "SELECT pg_sleep(2.5);")

    code, output = finish(on_terminal(project, "apply", columns=40))

    assert code == 0, output
    drawn = re.findall(r"\r\x1b\[K(\[[^\r\n]*)", output)
    assert drawn and all(len(text) <= 39 for text in drawn), drawn
    assert any(
        re.fullmatch(r"\[2/2\] 0002 a_migration_with_a_lo\.\.\.  [1-9]s", d) for d in drawn
    ), drawn


def test_ctrl_c_erases_the_line_before_mg_says_interrupted(project: Project) -> None:
    project.add("0002", "very_slow", "SELECT pg_sleep(60);")
    child = on_terminal(project, "apply")
    # Once it shows a second or more: a redraw held up on a busy machine may skip 1s.
    child.expect(r"\[2/2\] 0002 very_slow  [1-9]\d*s")
    child.kill(signal.SIGINT)

    code, output = finish(child)

    assert code != 0
    tail = output[output.rindex("[2/2] 0002 very_slow") :]
    assert re.search(r"\r\x1b\[K(\^C)?(\r\n)?mg: ", tail), tail
    assert project.statuses().get("0002") != "applied"


def test_nothing_extra_when_not_a_terminal(project: Project) -> None:
    project.add("0002", "quick", "SELECT 1;")

    done = project.mg("apply")

    assert done.returncode == 0, done.stderr
    assert "[1/2]" not in done.stderr + done.stdout
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert re.findall(r"(?m)^applied (\d{4})", done.stdout) == ["0001", "0002"]
