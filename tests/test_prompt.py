"""The question on a protected target is asked by the plugin that owns the terminal
(``output``) through ``mg_prompt``; the core only decides what the answer means."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from migretti_core import hookimpl
from migretti_core.api import EXIT_ABORTED, Session
from migretti_core.testing import make_project, run_cli, write_migration


def test_hook_mg_prompt(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_project(tmp_path, database_url, settings={"envs": {"prod": {}}})
    write_migration(tmp_path, "0001", "t", "CREATE TABLE t (id int);")
    asked: list[tuple[str, str]] = []
    answers = ["no\n", "  yes \n"]

    @hookimpl
    def mg_prompt(session: Session, message: str, question: str) -> str | None:
        asked.append((message, question))
        return answers.pop(0)

    console = types.ModuleType("console")
    console.mg_prompt = mg_prompt  # type: ignore[attr-defined]

    # stdin is not a terminal here: the builtin output plugin cannot ask
    nobody = run_cli(["--env", "prod", "apply"], cwd=tmp_path)
    assert nobody.exit_code == EXIT_ABORTED
    assert "there is no terminal to confirm on" in nobody.stderr

    # nor may a plugin answer for the user there (SPEC 10): it is not even asked
    alone = run_cli(["--env", "prod", "apply"], cwd=tmp_path, plugins=[console])
    assert alone.exit_code == EXIT_ABORTED
    assert "there is no terminal to confirm on" in alone.stderr
    assert asked == []

    leader, follower = os.openpty()
    stdin = os.fdopen(follower, "r")
    monkeypatch.setattr(sys, "stdin", stdin)  # a real terminal: the plugin is asked
    refused = run_cli(["--env", "prod", "apply"], cwd=tmp_path, plugins=[console])
    assert refused.exit_code == EXIT_ABORTED
    assert "not confirmed; nothing was changed" in refused.stderr
    message, question = asked[0]
    assert message.startswith("apply on protected environment prod: ")
    assert "  up   0001 t" in message
    assert question == "Type 'yes' to continue: "

    approved = run_cli(["--env", "prod", "apply"], cwd=tmp_path, plugins=[console])
    assert approved.exit_code == 0, approved.stderr
    assert "applied 0001 t" in approved.stdout
    assert len(asked) == 2
    monkeypatch.undo()
    stdin.close()
    os.close(leader)

    # --yes needs no answer: the plugin is not asked
    write_migration(tmp_path, "0002", "u", "CREATE TABLE u (id int);")
    done = run_cli(["--env", "prod", "--yes", "apply"], cwd=tmp_path, plugins=[console])
    assert done.exit_code == 0, done.stderr
    assert len(asked) == 2
