"""Migrations named on the command line the way people type them: a full id, a unique id
prefix, the name or the file name; an ambiguous name is refused listing what it matches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project

USERS, ORDERS, INDEX = "01HZY0A1", "01HZY0B2", "01HZZ0C3"


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    project.add(USERS, "users", "CREATE TABLE users (id int);", "DROP TABLE users;")
    project.add(ORDERS, "orders", "CREATE TABLE orders (id int);", "DROP TABLE orders;")
    project.add(INDEX, "users_index", "CREATE INDEX ui ON users (id);", "DROP INDEX ui;")
    yield project
    project.close()


def applied(project: Project) -> list[str]:
    return sorted(project.statuses())


def test_apply_to_takes_a_prefix_a_name_or_a_file_name(project: Project) -> None:
    done = project.mg("apply", "--to", "01hzy0a")  # a prefix, in lower case
    assert done.returncode == 0, done.stderr
    assert applied(project) == [USERS]
    done = project.mg("apply", "--to", "orders")
    assert done.returncode == 0, done.stderr
    assert applied(project) == [USERS, ORDERS]
    done = project.mg("apply", "--to", f"migrations/{INDEX}_users_index.sql")
    assert done.returncode == 0, done.stderr
    assert applied(project) == [USERS, ORDERS, INDEX]


def test_an_ambiguous_or_unknown_name_exits_2_listing_the_matches(project: Project) -> None:
    done = project.mg("apply", "--to", "01HZY")
    assert done.returncode == 2, done.stderr
    assert f"{USERS}_users.sql" in done.stderr and f"{ORDERS}_orders.sql" in done.stderr
    assert f"{INDEX}_users_index.sql" not in done.stderr
    assert "Traceback" not in done.stderr
    done = project.mg("apply", "--to", "nothing_like_it")
    assert done.returncode == 2, done.stderr
    assert "nothing_like_it" in done.stderr
    assert applied(project) == []
    # "users" is a whole name: it does not also match users_index
    done = project.mg("apply", "--to", "users")
    assert done.returncode == 0, done.stderr
    assert applied(project) == [USERS]


def test_rollback_to_and_fix_take_the_same_names(project: Project) -> None:
    assert project.mg("apply").returncode == 0
    done = project.mg("rollback", "--to", "users")
    assert done.returncode == 0, done.stderr
    assert applied(project) == [USERS]
    done = project.mg("rollback", "--to", "01HZ")
    assert done.returncode == 2, done.stderr

    assert project.mg("apply").returncode == 0
    project.sql(f"UPDATE _migrations SET status = 'failed' WHERE id = '{INDEX}'")
    done = project.mg("fix", "users_index", "--applied")
    assert done.returncode == 0, done.stderr
    assert project.statuses()[INDEX] == "applied"
    assert project.log()[-1] == (INDEX, "FIX")
    done = project.mg("fix", f"{ORDERS}_orders.sql", "--remove")
    assert done.returncode == 0, done.stderr
    assert ORDERS not in project.statuses()
    # a migration known only to the history (its file is gone) is named by its id or name
    project.path_of(INDEX).unlink()
    done = project.mg("fix", "01HZZ", "--remove")
    assert done.returncode == 0, done.stderr
    assert applied(project) == [USERS]


def test_a_migration_whose_file_is_gone_is_named_by_the_file_name_it_had(
    project: Project,
) -> None:
    # the file name is what a user who deleted the file has at hand (git log, the shell's
    # history): fix and rollback --to take it, path and all, as for a file that exists
    assert project.mg("apply").returncode == 0
    project.path_of(INDEX).unlink()
    project.path_of(ORDERS).unlink()
    done = project.mg("rollback", "--to", f"migrations/{ORDERS}_orders.sql")
    assert done.returncode == 3, done.stderr  # reached: the file it would roll back is gone
    assert "its file is gone" in done.stderr
    done = project.mg("fix", f"{INDEX}_users_index.sql", "--remove")
    assert done.returncode == 0, done.stderr
    done = project.mg("fix", f"migrations/{ORDERS}_orders", "--remove")
    assert done.returncode == 0, done.stderr
    assert applied(project) == [USERS]
    assert project.log()[-2:] == [(INDEX, "FIX"), (ORDERS, "FIX")]


def test_a_to_naming_no_migration_is_reported_before_a_blocked_state(project: Project) -> None:
    # the command line's mistake exits 2 whatever the history says; once it is right, the
    # state blocks (exit 3) as before
    assert project.mg("apply", "--to", "orders").returncode == 0
    users = project.path_of(USERS)
    users.write_text(users.read_text() + "-- reviewed\n")  # an applied file changed
    project.sql(
        "INSERT INTO _migrations (id, name, checksum, status) "
        f"VALUES ('{INDEX}', 'users_index', 'x', 'failed')"
    )
    commands = [("apply",), ("apply", "--dry-run"), ("rollback",), ("rollback", "--dry-run")]
    for command in commands:
        for given, said in (("nosuch", "no such migration"), ("01HZY", "is ambiguous")):
            done = project.mg(*command, "--to", given)
            assert done.returncode == 2, (command, given, done.stderr)
            assert f"--to '{given}'" in done.stderr and said in done.stderr
            assert "failed" not in done.stderr and "changed since it ran" not in done.stderr
    for command in commands:
        done = project.mg(*command, "--to", "users")
        assert done.returncode == 3, (command, done.stderr)
        assert "failed" in done.stderr
    assert project.statuses() == {USERS: "applied", ORDERS: "applied", INDEX: "failed"}
