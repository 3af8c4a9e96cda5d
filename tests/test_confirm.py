"""Production confirmation (docs/protection.md) through the real ``mg`` command.

Interactive answers go through a real pseudo-terminal (pexpect), so ``mg`` sees exactly what
it sees when a person runs it; everything else runs with stdin that is not a terminal.
"""

from __future__ import annotations

import io
import json
import shlex
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pexpect
import pytest

from migretti_core.testing import MG_COMMAND, Project, mg_env

PASSWORD = "Pw-5ecret-7b1f"
PROMPT = "Type 'yes' to continue: "
PROFILES = """\
envs:
  dev:
  preprod:
  prod:
  PROD:
  Production:
  live:
  LIVE:
  staging:
    protected: true
  production:
    protected: false
"""
PROTECTED = ["prod", "PROD", "Production", "live", "LIVE", "staging", "production"]
UNPROTECTED = ["dev", "preprod"]


@pytest.fixture
def project(tmp_path: Path, database_url: str, db_conninfo: dict[str, str]) -> Project:
    """Two migrations; the password comes from the environment through interpolation."""
    proj = Project(tmp_path / "proj", database_url, configure=False)
    database = {key: db_conninfo[key] for key in ("host", "port", "user", "dbname")}
    database["password"] = "${MG_TEST_DB_PASSWORD}"
    proj.configure(database, extra=PROFILES)
    proj.add_table("0001")
    proj.add_table("0002")
    return proj


ENV = {"MG_TEST_DB_PASSWORD": PASSWORD}


def run(project: Project, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``mg`` with stdin a pipe (never a terminal)."""
    done = project.mg(*args, env=ENV, input=stdin)
    assert PASSWORD not in done.stdout + done.stderr
    return done


class Terminal:
    """``mg`` running on a pseudo-terminal, as a person at a shell would run it."""

    def __init__(self, project: Project, args: Sequence[str]) -> None:
        self.output = io.StringIO()
        self.child = pexpect.spawn(
            MG_COMMAND[0],
            [*MG_COMMAND[1:], *args],
            cwd=str(project.root),
            env=mg_env(ENV),
            encoding="utf-8",
            timeout=60,
            dimensions=(50, 300),
        )
        self.child.logfile_read = self.output

    def wait_for_prompt(self) -> str:
        """Everything shown before the question."""
        self.child.expect_exact(PROMPT)
        return self.output.getvalue()

    def answer(self, text: str) -> None:
        self.child.sendline(text)

    def finish(self) -> int:
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert PASSWORD not in self.output.getvalue()
        status = self.child.exitstatus
        assert isinstance(status, int), self.output.getvalue()
        return status

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def ask(project: Project, *args: str) -> Terminal:
    return Terminal(project, args)


# --- answering at a terminal -------------------------------------------------------------


def test_typing_yes_at_the_terminal_proceeds(project: Project) -> None:
    terminal = ask(project, "--env", "prod", "apply")
    try:
        terminal.wait_for_prompt()
        terminal.answer("yes")
        assert terminal.finish() == 0, terminal.output.getvalue()
    finally:
        terminal.kill()
    assert project.statuses() == {"0001": "applied", "0002": "applied"}
    assert project.tables() == {"t_0001", "t_0002"}


@pytest.mark.parametrize("answer", ["no", "y", "", "YES", "yes please", "ye"])
def test_any_other_answer_exits_5_and_changes_nothing(project: Project, answer: str) -> None:
    terminal = ask(project, "--env", "prod", "apply")
    try:
        terminal.wait_for_prompt()
        terminal.answer(answer)
        assert terminal.finish() == 5, terminal.output.getvalue()
    finally:
        terminal.kill()
    assert project.all_tables() == set()


def test_end_of_input_at_the_prompt_exits_5(project: Project) -> None:
    terminal = ask(project, "--env", "prod", "apply")
    try:
        terminal.wait_for_prompt()
        terminal.child.sendeof()
        assert terminal.finish() == 5, terminal.output.getvalue()
    finally:
        terminal.kill()
    assert project.all_tables() == set()
    # Ctrl-D echoes nothing: the error starts a line of its own, not after the question
    lines = terminal.output.getvalue().splitlines()
    assert any(line.startswith("mg: error: not confirmed") for line in lines), lines


@pytest.mark.parametrize("stop", ["Ctrl-C", "SIGTERM"])
def test_interrupted_at_the_prompt_exits_130(project: Project, stop: str) -> None:
    terminal = ask(project, "--env", "prod", "apply")
    try:
        terminal.wait_for_prompt()
        if stop == "Ctrl-C":
            terminal.child.sendintr()
        else:
            terminal.child.kill(signal.SIGTERM)
        assert terminal.finish() == 130, terminal.output.getvalue()
    finally:
        terminal.kill()
    assert "mg: interrupted" in terminal.output.getvalue()
    assert "not confirmed" not in terminal.output.getvalue()
    assert project.all_tables() == set()


def test_prompt_shows_target_and_plan_but_never_the_password(
    project: Project, db_conninfo: dict[str, str]
) -> None:
    terminal = ask(project, "--env", "prod", "apply")
    try:
        shown = terminal.wait_for_prompt()
        terminal.answer("no")
        assert terminal.finish() == 5
    finally:
        terminal.kill()
    assert db_conninfo["host"] in shown
    assert db_conninfo["dbname"] in shown
    assert db_conninfo["user"] in shown
    assert db_conninfo["port"] in shown
    assert "prod" in shown
    assert "0001" in shown and "0002" in shown
    assert PASSWORD not in shown


def test_down_at_a_terminal_shows_the_migration_to_roll_back(project: Project) -> None:
    assert run(project, "apply").returncode == 0
    terminal = ask(project, "--env", "live", "down")
    try:
        shown = terminal.wait_for_prompt()
        terminal.answer("yes")
        assert terminal.finish() == 0, terminal.output.getvalue()
    finally:
        terminal.kill()
    assert "0002" in shown
    assert project.statuses() == {"0001": "applied"}


def test_plan_that_changed_while_asking_is_not_run(project: Project) -> None:
    assert run(project, "apply").returncode == 0
    terminal = ask(project, "--env", "prod", "rollback")
    try:
        shown = terminal.wait_for_prompt()
        assert "0002" in shown
        # Someone else rolls 0002 back while the question is open.
        assert run(project, "rollback").returncode == 0
        terminal.answer("yes")
        # What was confirmed is done: nothing left to do, as when two runs race unasked.
        assert terminal.finish() == 0, terminal.output.getvalue()
    finally:
        terminal.kill()
    assert "0002 (create_t_0002) was rolled back by another run" in terminal.output.getvalue()
    # 0001 was never shown, so it must still be applied.
    assert project.statuses() == {"0001": "applied"}
    assert project.tables() == {"t_0001"}


def test_a_migration_applied_while_asking_is_not_rolled_back_in_place_of_the_confirmed_one(
    project: Project,
) -> None:
    assert run(project, "apply").returncode == 0
    project.add_table("0003")
    terminal = ask(project, "--env", "prod", "rollback")
    try:
        shown = terminal.wait_for_prompt()
        assert "0002" in shown and "0003" not in shown
        # Someone else applies 0003 while the question is open: it was never shown.
        assert run(project, "apply").returncode == 0
        terminal.answer("yes")
        assert terminal.finish() == 3, terminal.output.getvalue()
    finally:
        terminal.kill()
    assert "nothing was rolled back" in terminal.output.getvalue()
    assert project.statuses() == {"0001": "applied", "0002": "applied", "0003": "applied"}
    assert project.tables() == {"t_0001", "t_0002", "t_0003"}


# --- no terminal -------------------------------------------------------------------------


def test_piping_yes_without_a_terminal_is_refused(project: Project) -> None:
    done = run(project, "--env", "prod", "apply", stdin="yes\n")

    assert done.returncode == 5, done.stderr
    assert "--yes" in done.stderr
    assert "Traceback" not in done.stderr
    assert project.all_tables() == set()


def test_a_plugin_cannot_approve_without_a_terminal(project: Project) -> None:
    """SPEC 10: no terminal on stdin and no --yes refuses, whatever a plugin answers."""
    (project.root / "approve_all.py").write_text(
        "from migretti_core import hookimpl\n\n\n"
        "@hookimpl\n"
        "def mg_prompt(session, message, question):\n"
        "    return 'yes'\n",
        encoding="utf-8",
    )
    env = {**ENV, "PYTHONPATH": str(project.root)}
    for args in (["apply"], ["apply", "--dry-run"], ["up"]):
        done = project.mg("-p", "approve_all", "--env", "prod", *args, env=env)

        assert done.returncode == 5, (args, done.stdout, done.stderr)
        assert "there is no terminal to confirm on" in done.stderr
    assert project.all_tables() == set()
    assert project.statuses() == {}


@pytest.mark.parametrize(
    "args",
    [
        ["--yes", "apply"],
        ["apply", "--yes"],
        ["-y", "apply"],
        ["apply", "-y"],
    ],
)
def test_yes_option_proceeds_without_asking(project: Project, args: list[str]) -> None:
    done = run(project, "--env", "prod", *args)

    assert done.returncode == 0, done.stderr
    assert PROMPT.strip() not in done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}


@pytest.mark.parametrize("env", PROTECTED)
def test_protected_profiles_refuse_without_a_terminal(project: Project, env: str) -> None:
    done = run(project, "--env", env, "apply")

    assert done.returncode == 5, done.stderr
    assert project.all_tables() == set()


def test_protected_profile_selected_through_mg_env(project: Project) -> None:
    done = project.mg("apply", env={**ENV, "MG_ENV": "Production"})

    assert done.returncode == 5, done.stderr
    assert project.all_tables() == set()


@pytest.mark.parametrize("env", [*UNPROTECTED, None])
def test_unprotected_profiles_are_never_asked(project: Project, env: str | None) -> None:
    args = ["--env", env] if env else []
    done = run(project, *args, "apply")

    assert done.returncode == 0, done.stderr
    assert "Type 'yes'" not in done.stderr
    assert "protected" not in done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}


def test_refusal_message_shows_target_without_password(
    project: Project, db_conninfo: dict[str, str]
) -> None:
    done = run(project, "--env", "prod", "apply")

    assert done.returncode == 5
    assert db_conninfo["dbname"] in done.stderr
    assert db_conninfo["user"] in done.stderr
    assert PASSWORD not in done.stderr


def prepare(project: Project, command: str) -> None:
    """A database where ``command`` has something to do."""
    if command in ("down", "rollback"):
        assert run(project, "apply").returncode == 0
    elif command == "fix":
        project.add("0003", "fails", "SELECT 1;\nSELECT * FROM missing;", no_transaction=True)
        assert run(project, "apply").returncode == 1
        assert project.statuses()["0003"] == "failed"
    elif command == "seed":
        assert run(project, "apply").returncode == 0
        seeds = project.root / "seeds"
        seeds.mkdir()
        (seeds / "0001_rows.sql").write_text("INSERT INTO t_0001 VALUES (1);\n", encoding="utf-8")


@pytest.mark.parametrize(
    "args",
    [
        ["up"],
        ["down"],
        ["rollback"],
        ["rollback", "2"],
        ["fix", "0003", "--applied"],
        ["fix", "0003", "--remove"],
        ["seed"],
    ],
)
def test_every_command_that_runs_sql_asks(project: Project, args: list[str]) -> None:
    prepare(project, args[0])
    before = (project.statuses(), project.log(), project.all_tables())

    done = run(project, "--env", "prod", *args)

    assert done.returncode == 5, done.stdout + done.stderr
    assert (project.statuses(), project.log(), project.all_tables()) == before
    if "t_0001" in project.tables():
        assert project.value("SELECT count(*) FROM t_0001") == 0

    # With --yes the same command goes ahead, so the refusal above came from the question.
    assert run(project, "--env", "prod", "--yes", *args).returncode == 0
    assert (project.statuses(), project.log(), project.all_tables()) != before


# --- dry runs and read-only commands -----------------------------------------------------


def test_dry_run_on_a_protected_profile_asks_too(project: Project) -> None:
    done = run(project, "--env", "prod", "apply", "--dry-run")

    assert done.returncode == 5, done.stdout + done.stderr
    assert "ok: 0001" not in done.stdout


def test_dry_run_at_a_terminal_runs_after_yes(project: Project) -> None:
    terminal = ask(project, "--env", "prod", "apply", "--dry-run")
    try:
        terminal.wait_for_prompt()
        terminal.answer("yes")
        assert terminal.finish() == 0, terminal.output.getvalue()
    finally:
        terminal.kill()
    assert "ok: 0002" in terminal.output.getvalue()
    assert project.all_tables() == set()


def test_dry_run_at_a_terminal_declined_exits_5(project: Project) -> None:
    terminal = ask(project, "--env", "prod", "apply", "--dry-run")
    try:
        terminal.wait_for_prompt()
        terminal.answer("no")
        assert terminal.finish() == 5
    finally:
        terminal.kill()
    assert "ok: 0001" not in terminal.output.getvalue()


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["list"],
        ["head"],
        ["verify"],
        ["status", "--format", "json"],
        ["list", "--format", "json"],
        ["plugins"],
    ],
)
def test_read_only_commands_never_ask(project: Project, args: list[str]) -> None:
    assert run(project, "up").returncode == 0

    done = run(project, "--env", "prod", *args)

    assert done.returncode == 0, done.stderr
    assert "Type 'yes'" not in done.stdout + done.stderr
    assert "protected" not in done.stderr


def test_squash_only_reads_the_database_and_never_asks(project: Project) -> None:
    done = run(project, "--env", "prod", "squash", "combined", "--dry-run")

    assert done.returncode == 0, done.stderr
    assert "Type 'yes'" not in done.stdout + done.stderr
    assert "CREATE TABLE t_0001" in done.stdout


def test_read_only_command_at_a_terminal_is_not_asked(project: Project) -> None:
    terminal = ask(project, "--env", "prod", "status")
    try:
        assert terminal.finish() == 0
    finally:
        terminal.kill()
    assert "Type 'yes'" not in terminal.output.getvalue()


def test_blocking_the_protect_plugin_turns_the_name_rule_off(project: Project) -> None:
    done = run(project, "--env", "prod", "-p", "no:protect", "apply")

    assert done.returncode == 0, done.stderr
    assert project.statuses() == {"0001": "applied", "0002": "applied"}


def test_a_plugin_veto_names_the_plugin(project: Project) -> None:
    """The refusal says which plugin refused, by the name `mg plugins` shows (exit 5)."""
    tools = project.root / "tools"
    tools.mkdir()
    (tools / "change_window.py").write_text(
        "from migretti_core import hookimpl\n\n\n"
        "@hookimpl\n"
        "def mg_confirm(session, target, plan):\n"
        "    return False\n",
        encoding="utf-8",
    )
    with (project.root / "mg.yaml").open("a", encoding="utf-8") as config:
        config.write("plugins: [tools/change_window.py]\n")
    listed = run(project, "plugins", "--format", "json")
    assert "change_window" in [p["name"] for p in json.loads(listed.stdout)]

    done = run(project, "--env", "prod", "--yes", "apply")

    assert done.returncode == 5, done.stderr
    assert "plugin 'change_window' refused the command" in done.stderr, done.stderr
    assert project.all_tables() == set()
    logged = run(project, "--env", "prod", "--yes", "--json-log", "apply")
    assert logged.returncode == 5
    failed = [json.loads(line) for line in logged.stderr.splitlines() if line.startswith("{")]
    (event,) = [e for e in failed if e["event"] == "command.failed"]
    assert event["plugin"] == "change_window"
    assert event["exit_code"] == 5
    assert "plugin 'change_window' refused" in event["message"]


@pytest.mark.parametrize("log", [[], ["--json-log"]], ids=["text", "json-log"])
def test_with_stderr_redirected_the_question_still_reaches_the_terminal(
    project: Project, tmp_path: Path, log: list[str]
) -> None:
    """`mg apply --env prod 2>deploy.log` at a terminal: the target, the plan and the question
    are shown on the terminal, not hidden in the file; a JSON log stays JSON."""
    errors = tmp_path / "deploy.log"
    command = shlex.join([*MG_COMMAND, *log, "--env", "prod", "apply"])
    child = pexpect.spawn(
        "/bin/sh",
        ["-c", f"exec {command} 2>{shlex.quote(str(errors))}"],
        cwd=str(project.root),
        env=mg_env(ENV),
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 300),
    )
    shown = io.StringIO()
    child.logfile_read = shown
    try:
        child.expect_exact(PROMPT)
        before = shown.getvalue()
        assert "prod" in before and "0001" in before and "0002" in before, before
        child.sendline("yes")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (shown.getvalue(), errors.read_text())
    assert PASSWORD not in shown.getvalue() + errors.read_text()
    assert PROMPT not in errors.read_text()
    if log:
        for line in errors.read_text().splitlines():
            assert json.loads(line)["event"], line
    assert project.statuses() == {"0001": "applied", "0002": "applied"}


@pytest.mark.parametrize("where", ["config", "environment"])
def test_the_question_shows_the_target_a_connection_service_names(
    tmp_path: Path, database_url: str, db_conninfo: dict[str, str], where: str
) -> None:
    # The host, port, user and database come from pg_service.conf: the question shows them,
    # not libpq's defaults for an empty configuration (the OS user on localhost).
    info = db_conninfo
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(
        "[shop]\n"
        + "".join(f"{key}={info[key]}\n" for key in ("host", "port", "user", "dbname"))
        + (f"password={info['password']}\n" if info.get("password") else ""),
        encoding="utf-8",
    )
    proj = Project(tmp_path / "proj", database_url, configure=False)
    in_config = "    database:\n      service: shop\n"
    profile = in_config if where == "config" else "    protected: true\n"
    (proj.root / "mg.yaml").write_text(f"envs:\n  prod:\n{profile}", encoding="utf-8")
    proj.add_table("0001")
    env = {"PGSERVICEFILE": str(service_file)}
    if where == "environment":
        env["PGSERVICE"] = "shop"
    done = proj.mg("--env", "prod", "apply", env=env)
    assert done.returncode == 5, done.stderr
    target = f"{info['user']}@{info['host']}:{info['port']}/{info['dbname']}"
    assert f"apply on protected environment prod: {target}\n" in done.stderr
    assert proj.value("select to_regclass('_migrations') is null")
