"""`mg squash`: the squashed migration does what the originals did, and refusals are clean."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migretti_core.errors import UsageError
from migretti_core.testing import assert_clean_error, fresh_database, run_mg, write_text
from migretti_plugins.files.parse import parse_migration, render_migration
from migretti_plugins.split.lexer import split_sql
from migretti_plugins.squash import sections, terminate

# A function whose dollar-quoted body holds semicolons and a comment; a statement without
# its semicolon; sections that end in comments, one of them with no newline at the end of
# the file.
FUNCTIONS = """\
-- migration: functions
-- migrate: up
CREATE FUNCTION add_one(n integer) RETURNS integer LANGUAGE plpgsql AS $body$
BEGIN
    -- a comment inside the body; and a semicolon
    RETURN n + 1;
END
$body$;
CREATE FUNCTION twice(n integer) RETURNS integer LANGUAGE sql AS $$ SELECT n * 2 $$
-- migrate: down
DROP FUNCTION twice(integer);
DROP FUNCTION add_one(integer); -- trailing comment
"""
TABLES = """\
-- migrate: up
CREATE TABLE items (
    id integer PRIMARY KEY,
    qty integer NOT NULL DEFAULT add_one(0)
)
-- the statement above has no semicolon
-- migrate: down
DROP TABLE items -- trailing comment"""
VIEWS = """\
-- migrate: up
CREATE VIEW doubled AS SELECT id, twice(qty) AS qty FROM items;
COMMENT ON VIEW doubled IS 'it''s doubled; really';
/* a block comment at the end */
-- migrate: down
DROP VIEW doubled;
"""

IDS = ("0001", "0002", "0003")


@pytest.fixture
def second_url(pg_url: str) -> Iterator[str]:
    with fresh_database(pg_url) as url:
        yield url


def make_project(directory: Path, url: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mg.yaml").write_text(
        f"database:\n  url: {json.dumps(url)}\nenvs:\n  prod:\n    protected: true\n",
        encoding="utf-8",
    )
    migrations = directory / "migrations"
    migrations.mkdir(exist_ok=True)
    for ident, name, text in zip(
        IDS, ("functions", "tables", "views"), (FUNCTIONS, TABLES, VIEWS), strict=True
    ):
        (migrations / f"{ident}_{name}.sql").write_bytes(text.encode("utf-8"))
    return directory


def files(project: Path) -> dict[str, str]:
    return {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted((project / "migrations").iterdir())
        if p.is_file()
    }


def schema_dump(psql_bin: Path, url: str) -> str:
    """The schema without the history tables, minus the lines that differ on every dump."""
    done = subprocess.run(
        [
            str(psql_bin.parent / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=_migrations*",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return "\n".join(
        line
        for line in done.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def user_objects(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """
            SELECT 'relation', relname FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND relname NOT LIKE '\\_migrations%'
            UNION ALL
            SELECT 'function', proname FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public'
            ORDER BY 1, 2
            """
        ).fetchall()


def history(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        return conn.execute(
            "SELECT id, name, status, checksum FROM _migrations ORDER BY id"
        ).fetchall()


def squashed_file(project: Path) -> Path:
    found = [p for p in (project / "migrations").iterdir() if p.name not in _originals()]
    assert len(found) == 1, found
    return found[0]


def _originals() -> set[str]:
    return {"0001_functions.sql", "0002_tables.sql", "0003_views.sql"}


def test_squashed_migration_builds_the_same_schema_and_rolls_back_to_empty(
    tmp_path: Path, database_url: str, second_url: str, psql_bin: Path
) -> None:
    one_by_one = make_project(tmp_path / "one", database_url)
    applied = run_mg(["apply"], one_by_one)
    assert applied.returncode == 0, applied.stderr
    assert len(history(database_url)) == 3

    squashed = make_project(tmp_path / "squashed", second_url)
    result = run_mg(["squash", "Base schema"], squashed)
    assert result.returncode == 0, result.stderr
    new = squashed_file(squashed)
    assert set(files(squashed)) == {new.name}
    match = re.fullmatch(r"([0-9A-Z]{26})_base_schema\.sql", new.name)
    assert match, new.name
    text = new.read_text(encoding="utf-8")
    assert text.startswith(f"-- migration: Base schema\n-- id: {match.group(1)}\n")
    assert "-- squashed: 0001, 0002, 0003\n" in text
    assert match.group(1) > "0003"

    applied = run_mg(["apply"], squashed)
    assert applied.returncode == 0, applied.stderr
    assert [row[0] for row in history(second_url)] == [match.group(1)]
    assert schema_dump(psql_bin, second_url) == schema_dump(psql_bin, database_url)
    with psycopg.connect(second_url) as conn:
        conn.execute("INSERT INTO items (id) VALUES (1)")
        assert conn.execute("SELECT qty FROM doubled").fetchone() == (2,)

    rolled = run_mg(["rollback"], squashed)
    assert rolled.returncode == 0, rolled.stderr
    assert user_objects(second_url) == []
    assert history(second_url) == []


def test_down_sections_come_in_reverse_order(tmp_path: Path, database_url: str) -> None:
    project = make_project(tmp_path, database_url)
    result = run_mg(["squash", "all"], project)
    assert result.returncode == 0, result.stderr
    migration = parse_migration(squashed_file(project), squashed_file(project).read_bytes())
    assert [s.text for s in split_sql(migration.up_sql)][:1] == [
        s.text for s in split_sql(parse_migration(Path("0001_f.sql"), FUNCTIONS.encode()).up_sql)
    ][:1]
    down = [s.text for s in split_sql(migration.down_sql or "")]
    assert down == [
        "DROP VIEW doubled",
        "DROP TABLE items",
        "DROP FUNCTION twice(integer)",
        "DROP FUNCTION add_one(integer)",
    ]
    assert migration.transactional


def test_dry_run_prints_the_file_and_changes_nothing(tmp_path: Path, database_url: str) -> None:
    project = make_project(tmp_path, database_url)
    before = files(project)
    result = run_mg(["squash", "all", "--dry-run"], project)
    assert result.returncode == 0, result.stderr
    assert files(project) == before
    assert "nothing was changed" in result.stderr
    ident = re.search(r"^-- id: (\w+)$", result.stdout, re.M)
    assert ident, result.stdout
    printed = parse_migration(Path(f"{ident.group(1)}_all.sql"), result.stdout.encode())
    assert printed.has_down
    assert history(database_url) == []


def test_only_pending_migrations_are_squashed(tmp_path: Path, database_url: str) -> None:
    project = make_project(tmp_path, database_url)
    assert run_mg(["up"], project).returncode == 0
    result = run_mg(["squash", "rest"], project)
    assert result.returncode == 0, result.stderr
    assert set(files(project)) == {"0001_functions.sql", squashed_file(project).name}
    assert "-- squashed: 0002, 0003\n" in squashed_file(project).read_text(encoding="utf-8")
    applied = run_mg(["apply"], project)
    assert applied.returncode == 0, applied.stderr
    assert ("relation", "doubled") in user_objects(database_url)


def test_refuses_with_fewer_than_two_pending(tmp_path: Path, database_url: str) -> None:
    project = make_project(tmp_path, database_url)
    assert run_mg(["up"], project).returncode == 0
    assert run_mg(["up"], project).returncode == 0
    before = files(project)
    assert_clean_error(run_mg(["squash", "x"], project), "only one migration is pending")
    assert run_mg(["up"], project).returncode == 0
    assert_clean_error(run_mg(["squash", "x"], project), "no migration is pending")
    assert files(project) == before


def test_too_few_files_are_refused_without_the_database(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "migrations").mkdir(parents=True)
    # No server listens on port 1: a connection attempt would fail with exit 1.
    url = "postgresql://nouser@127.0.0.1:1/none?connect_timeout=2"
    (project / "mg.yaml").write_text(f"database:\n  url: {json.dumps(url)}\n", encoding="utf-8")
    result = run_mg(["squash", "x"], project)
    assert_clean_error(result, "nothing to squash: migrations/ holds no migration")
    write_text(project / "migrations" / "0001_a.sql", "-- migrate: up\nSELECT 1;\n")
    for args in (["squash", "x"], ["squash", "x", "--dry-run"]):
        result = run_mg(args, project)
        assert_clean_error(result, "nothing to squash: migrations/ holds only one migration")
    assert files(project) == {"0001_a.sql": "-- migrate: up\nSELECT 1;\n"}


def test_refuses_while_a_migration_is_failed(tmp_path: Path, database_url: str) -> None:
    project = make_project(tmp_path, database_url)
    (project / "migrations" / "0003_views.sql").unlink()
    write_text(
        project / "migrations" / "0003_index.sql",
        """
        -- migrate: no-transaction
        -- migrate: up
        CREATE INDEX CONCURRENTLY missing_id ON missing (id);
        -- migrate: down
        DROP INDEX CONCURRENTLY missing_id;
        """,
    )
    for ident in ("0004", "0005"):
        write_text(
            project / "migrations" / f"{ident}_t.sql",
            f"-- migrate: up\nCREATE TABLE t{ident} (id int);\n"
            f"-- migrate: down\nDROP TABLE t{ident};\n",
        )
    assert run_mg(["apply"], project).returncode == 1
    assert [row[2] for row in history(database_url)] == ["applied", "applied", "failed"]
    before = files(project)
    for args in (["squash", "x"], ["squash", "x", "--dry-run"]):
        stderr = assert_clean_error(
            run_mg(args, project), "migration 0003 (index) failed", "mg fix 0003", code=3
        )
        assert "pending behind it" in stderr
    assert files(project) == before

    # once the failed migration is resolved, the pending ones behind it squash as before
    assert run_mg(["fix", "0003", "--applied"], project).returncode == 0
    result = run_mg(["squash", "rest"], project)
    assert result.returncode == 0, result.stderr
    assert "-- squashed: 0004, 0005\n" in squashed_file_named(project, "rest").read_text("utf-8")
    assert "0003_index.sql" in files(project)


def test_refuses_while_a_rollback_is_failed_with_the_rollback_advice(
    tmp_path: Path, database_url: str
) -> None:
    project = make_project(tmp_path, database_url)
    write_text(
        project / "migrations" / "0004_index.sql",
        """
        -- migrate: no-transaction
        -- migrate: up
        CREATE INDEX CONCURRENTLY items_qty ON items (qty);
        -- migrate: down
        DROP INDEX CONCURRENTLY missing_index;
        """,
    )
    assert run_mg(["apply"], project).returncode == 0
    assert run_mg(["down"], project).returncode == 1
    for ident in ("0005", "0006"):
        write_text(project / "migrations" / f"{ident}_t.sql", "-- migrate: up\nSELECT 1;\n")
    before = files(project)
    assert_clean_error(
        run_mg(["squash", "x"], project),
        "migration 0004 (index) failed",
        "`mg fix 0004 --remove` if you completed its rollback by hand",
        code=3,
    )
    assert files(project) == before


def test_refuses_to_mix_transactional_and_no_transaction(tmp_path: Path, database_url: str) -> None:
    project = make_project(tmp_path, database_url)
    write_text(
        project / "migrations" / "0004_index.sql",
        """
        -- migrate: no-transaction
        -- migrate: up
        CREATE INDEX CONCURRENTLY items_qty ON items (qty);
        -- migrate: down
        DROP INDEX CONCURRENTLY items_qty;
        """,
    )
    before = files(project)
    stderr = assert_clean_error(run_mg(["squash", "x"], project), "no-transaction")
    assert "0004_index.sql" in stderr
    assert files(project) == before


def test_squashes_no_transaction_migrations_into_one(tmp_path: Path, database_url: str) -> None:
    project = make_project(tmp_path, database_url)
    assert run_mg(["apply"], project).returncode == 0
    for ident, column in (("0004", "qty"), ("0005", "id")):
        write_text(
            project / "migrations" / f"{ident}_index_{column}.sql",
            f"""
            -- migrate: no-transaction
            -- migrate: up
            CREATE INDEX CONCURRENTLY items_{column} ON items ({column})
            -- migrate: down
            DROP INDEX CONCURRENTLY items_{column}
            """,
        )
    result = run_mg(["squash", "indexes"], project)
    assert result.returncode == 0, result.stderr
    text = squashed_file_named(project, "indexes").read_text(encoding="utf-8")
    assert "-- migrate: no-transaction\n" in text
    applied = run_mg(["apply"], project)
    assert applied.returncode == 0, applied.stderr
    assert ("relation", "items_id") in user_objects(database_url)
    rolled = run_mg(["down"], project)
    assert rolled.returncode == 0, rolled.stderr
    assert ("relation", "items_qty") not in user_objects(database_url)


def squashed_file_named(project: Path, slug: str) -> Path:
    found = list((project / "migrations").glob(f"*_{slug}.sql"))
    assert len(found) == 1, found
    return found[0]


def test_refuses_when_a_pending_migration_sorts_before_an_applied_one(
    tmp_path: Path, database_url: str
) -> None:
    project = make_project(tmp_path, database_url)
    functions = project / "migrations" / "0001_functions.sql"
    views = project / "migrations" / "0003_views.sql"
    functions.rename(tmp_path / "functions.sql")
    views.rename(tmp_path / "views.sql")
    write_text(
        project / "migrations" / "0002_tables.sql", "-- migrate: up\nCREATE TABLE t (id int);\n"
    )
    assert run_mg(["apply"], project).returncode == 0
    (tmp_path / "functions.sql").rename(functions)
    (tmp_path / "views.sql").rename(views)
    before = files(project)
    stderr = assert_clean_error(run_mg(["squash", "x"], project), "sorts before an applied one")
    assert "0001_functions.sql" in stderr
    assert files(project) == before


def test_without_a_down_everywhere_the_result_has_no_down(
    tmp_path: Path, database_url: str
) -> None:
    project = make_project(tmp_path, database_url)
    write_text(project / "migrations" / "0004_seed.sql", "-- migrate: up\nSELECT 1\n")
    result = run_mg(["squash", "all"], project)
    assert result.returncode == 0, result.stderr
    assert "0004_seed.sql has no down section" in result.stderr
    migration = parse_migration(
        squashed_file_named(project, "all"), squashed_file_named(project, "all").read_bytes()
    )
    assert migration.down_sql is None


def test_protected_profile_leaves_the_database_untouched(
    tmp_path: Path, database_url: str, psql_bin: Path
) -> None:
    project = make_project(tmp_path, database_url)
    fresh = run_mg(["--env", "prod", "squash", "x", "--dry-run"], project, input="")
    assert fresh.returncode == 0, fresh.stderr
    assert user_objects(database_url) == []
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,), "a squash must not create the history tables"

    assert run_mg(["up", "--env", "prod", "--yes"], project).returncode == 0
    rows_before = history(database_url)
    dump_before = schema_dump(psql_bin, database_url)
    result = run_mg(["--env", "prod", "squash", "rest"], project, input="")
    assert result.returncode == 0, result.stderr
    assert "-- squashed: 0002, 0003\n" in squashed_file_named(project, "rest").read_text(
        encoding="utf-8"
    )
    assert history(database_url) == rows_before
    assert schema_dump(psql_bin, database_url) == dump_before


# --- without a database ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("SELECT 1;\n", "SELECT 1;"),
        ("\n\nSELECT 1\n\n", "SELECT 1;"),
        ("SELECT 1 -- no semicolon", "SELECT 1 -- no semicolon\n;"),
        ("SELECT 1; -- done", "SELECT 1; -- done"),
        ("SELECT 1 /* c */", "SELECT 1 /* c */;"),
        ("SELECT $$a;b$$", "SELECT $$a;b$$;"),
        ("-- only a comment", "-- only a comment"),
    ],
)
def test_terminate_closes_the_last_statement(section: str, expected: str) -> None:
    assert terminate(section, split_sql, "x.sql:1") == expected


@pytest.mark.parametrize("section", ["SELECT 1; /* never closed", "SELECT $$ never closed"])
def test_terminate_refuses_what_no_semicolon_can_close(section: str) -> None:
    with pytest.raises(UsageError, match=r"x\.sql:3"):
        terminate(section, split_sql, "x.sql:3")


def test_a_comment_at_the_end_cannot_swallow_the_next_section() -> None:
    first = parse_migration(Path("0001_a.sql"), b"-- migrate: up\nCREATE TABLE a (id int) -- c")
    second = parse_migration(Path("0002_b.sql"), b"-- migrate: up\nCREATE TABLE b (id int)")
    up, down, warnings = sections([first, second], split_sql)
    text = render_migration("both", "0003", up, down)
    squashed = parse_migration(Path("0003_both.sql"), text.encode())
    assert [s.text for s in split_sql(squashed.up_sql)] == [
        "CREATE TABLE a (id int)",
        "CREATE TABLE b (id int)",
    ]
    assert warnings and "no down section" in warnings[0]


RENDER_PLUGIN = """
from migretti_core.api import hookimpl


@hookimpl
def mg_render_migration(migration_id, title, up_sql, down_sql, transactional, notes):
    header = "".join(f"-- {note}\\n" for note in notes)
    text = f"-- migration: {title}\\n-- id: {migration_id}\\n{header}-- rendered by: mine\\n"
    text += f"\\n-- migrate: up\\n{up_sql}"
    return f"{migration_id}_mine.sql", text
"""


def test_hook_mg_render_migration(tmp_path: Path, database_url: str) -> None:
    # squash writes what the file-format plugin renders, under the name it gives.
    project = make_project(tmp_path / "p", database_url)
    write_text(project / "mine.py", RENDER_PLUGIN)
    result = run_mg(["-p", "mine", "squash", "Base schema"], project)
    assert result.returncode == 0, result.stderr
    [(name, text)] = files(project).items()
    assert re.fullmatch(r"[0-9A-Z]{26}_mine\.sql", name), name
    assert "-- squashed: 0001, 0002, 0003\n-- rendered by: mine\n" in text
    assert "-- migrate: down" not in text  # the plugin's format, not the builtin's
    assert run_mg(["apply"], project).returncode == 0


def test_dry_run_masks_a_role_password_as_the_apply_dry_run_does(
    tmp_path: Path, database_url: str
) -> None:
    """The printed file hides ``PASSWORD '...'`` like every dry run's SQL; the file a real
    squash writes keeps it, as the migrations held it."""
    project = make_project(tmp_path, database_url)
    (project / "migrations" / f"{IDS[0]}_functions.sql").write_text(
        "-- migrate: up\nCREATE ROLE squash_app PASSWORD 'R0le-Secret-77';\n"
        "-- migrate: down\nDROP ROLE squash_app;\n",
        encoding="utf-8",
    )
    shown = run_mg(["squash", "all", "--dry-run"], project)
    assert shown.returncode == 0, shown.stderr
    assert "R0le-Secret-77" not in shown.stdout + shown.stderr
    assert "PASSWORD '****'" in shown.stdout
    applied_view = run_mg(["apply", "--dry-run", "--no-lint"], project)
    assert "R0le-Secret-77" not in applied_view.stdout + applied_view.stderr

    written = run_mg(["squash", "all"], project)
    assert written.returncode == 0, written.stderr
    (squashed,) = (project / "migrations").glob("*_all.sql")
    assert "PASSWORD 'R0le-Secret-77'" in squashed.read_text(encoding="utf-8")


def test_squash_while_an_apply_runs_waits_for_it_and_squashes_nothing_it_applied(
    tmp_path: Path, database_url: str
) -> None:
    from migretti_core.testing import Project, wait_until

    project = Project(tmp_path / "proj", database_url)
    try:
        project.sql("CREATE TABLE runs (id text)")
        # 0001 goes on once the test opens the gate: after the squash is waiting for the lock.
        project.sql("CREATE TABLE gate (open bool)")
        gate = (
            "DO $$ BEGIN WHILE NOT EXISTS (SELECT FROM gate) LOOP PERFORM pg_sleep(0.05);"
            " END LOOP; END $$;"
        )
        project.add("0001", "a", f"INSERT INTO runs VALUES ('0001');\n{gate}")
        project.add("0002", "b", "INSERT INTO runs VALUES ('0002');")
        project.add("0003", "c", "INSERT INTO runs VALUES ('0003');")
        apply = project.spawn("apply")

        def at_gate() -> bool:
            return any("FROM gate)" in query for _, _, query in project.other_backends())

        wait_until(lambda: at_gate() or not apply.running(), timeout=60)
        assert apply.running(), apply.stderr_so_far()
        squash = project.spawn("squash", "merged")
        waiting = "waiting for the migration lock"
        wait_until(lambda: waiting in squash.stderr_so_far() or not squash.running(), timeout=60)
        project.sql("INSERT INTO gate VALUES (true)")
        squashed = project.finish(squash)
        applied = project.finish(apply)

        assert applied.returncode == 0, applied.stderr
        # It waited for the apply, then found nothing pending to squash.
        assert "waiting for the migration lock" in squashed.stderr, squashed.stderr
        assert squashed.returncode == 2, squashed.stderr
        assert "Traceback" not in squashed.stderr
        files = sorted(p.name for p in project.migrations_dir.iterdir())
        assert files == ["0001_a.sql", "0002_b.sql", "0003_c.sql"]
        again = project.mg("apply")
        assert again.returncode == 0, again.stderr
        assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == [
            "0001",
            "0002",
            "0003",
        ]
    finally:
        project.close()


def test_two_squashes_at_once_write_one_file(tmp_path: Path, database_url: str) -> None:
    from migretti_core.testing import AdvisoryLockHolder, Project, wait_until

    project = Project(tmp_path / "proj", database_url)
    try:
        project.sql("CREATE TABLE runs (id text)")
        for ident in ("0001", "0002", "0003"):
            project.add(ident, f"m{ident}", f"INSERT INTO runs VALUES ('{ident}');")
        with AdvisoryLockHolder(database_url):
            first, second = project.spawn("squash", "first"), project.spawn("squash", "second")
            wait_until(
                lambda: all(
                    "waiting for the migration lock" in job.stderr_so_far()
                    for job in (first, second)
                ),
                timeout=60,
            )
        done = sorted((project.finish(first), project.finish(second)), key=lambda d: d.returncode)

        assert done[0].returncode == 0, done[0].stderr
        # The one that waited longer read the files again once it had the lock: the other
        # had replaced them. Before, it squashed the originals as first read into a second
        # file, and the next apply ran every migration twice.
        assert done[1].returncode == 2, done[1].stderr
        assert "nothing to squash" in done[1].stderr
        assert "Traceback" not in done[1].stderr
        files = sorted(p.name for p in project.migrations_dir.iterdir())
        assert len(files) == 1 and files[0].endswith(("_first.sql", "_second.sql")), files
        assert project.mg("apply").returncode == 0
        assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == [
            "0001",
            "0002",
            "0003",
        ]
    finally:
        project.close()


def test_ctrl_c_while_the_originals_are_replaced_leaves_no_migration_twice(
    tmp_path: Path, database_url: str
) -> None:
    import os
    import signal

    from migretti_core.testing import Project

    project = Project(tmp_path / "proj", database_url)
    try:
        # Many originals: removing them takes long enough for a signal sent as soon as the new
        # file has its name to land while some are still there.
        for number in range(1000):
            project.add(f"{number:04d}", "m", f"SELECT {number};", f"SELECT {number};")
        job = project.spawn("squash", "all")
        while job.running():
            if any(name.endswith("_all.sql") for name in os.listdir(project.migrations_dir)):
                os.kill(job.pid, signal.SIGINT)
                break
        done = project.finish(job)

        names = sorted(os.listdir(project.migrations_dir))
        # before: exit 130 with the new file beside the originals not yet removed, and the
        # next apply ran those migrations twice
        assert len(names) == 1 and names[0].endswith("_all.sql"), (len(names), done.stderr)
        assert done.returncode == 130, done.stderr
        # and says the squash was finished, not a bare "interrupted"
        assert (
            "mg: error: Ctrl-C came while the originals were replaced, so that was finished "
            f"first: wrote migrations/{names[0]}, replacing 1000 migrations (0000, 0001, "
        ) in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        project.close()


def test_apply_refuses_a_squashed_migration_beside_the_originals_it_replaces(
    tmp_path: Path, database_url: str
) -> None:
    from migretti_core.testing import Project

    project = Project(tmp_path / "proj", database_url)
    try:
        project.sql("CREATE TABLE runs (id text)")
        originals = {
            ident: project.add(ident, f"m{ident}", f"INSERT INTO runs VALUES ('{ident}');")
            for ident in ("0001", "0002", "0003")
        }
        kept = {path: path.read_bytes() for path in originals.values()}
        assert project.mg("squash", "all").returncode == 0
        (squashed,) = project.migrations_dir.glob("*_all.sql")
        # what a squash killed after writing the new file and removing only the first
        # original leaves behind
        for path in (originals["0002"], originals["0003"]):
            path.write_bytes(kept[path])

        done = project.mg("apply")

        # before: 0002 and 0003 ran, then the squashed migration ran them again
        assert done.returncode == 2, done.stderr
        assert (
            f"mg: error: migrations/{squashed.name}: mg squash wrote it to replace "
            "migrations/0002_m0002.sql, migrations/0003_m0003.sql, which are still there"
        ) in done.stderr
        assert project.statuses() == {}
        assert project.sql("SELECT id FROM runs") == []

        originals["0002"].unlink()
        originals["0003"].unlink()
        assert project.mg("apply").returncode == 0
        assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == [
            "0001",
            "0002",
            "0003",
        ]
    finally:
        project.close()


def test_a_from_comment_in_a_migration_of_ones_own_is_no_squash(
    tmp_path: Path, database_url: str
) -> None:
    from migretti_core.testing import Project

    project = Project(tmp_path / "proj", database_url)
    try:
        project.add("0001", "a", "CREATE TABLE a (id bigint);")
        project.add("0002", "b", "-- from 0001_a.sql\nALTER TABLE a ADD COLUMN b text;")
        done = project.mg("apply")
        assert done.returncode == 0, done.stderr
        assert project.statuses() == {"0001": "applied", "0002": "applied"}
    finally:
        project.close()


def _squash_leaving_originals(project: Any) -> tuple[Path, dict[str, Path], dict[Path, bytes]]:
    """Three originals squashed into one; the bytes of each kept to bring them back."""
    project.sql("CREATE TABLE runs (id text)")
    originals = {
        ident: project.add(ident, f"m{ident}", f"INSERT INTO runs VALUES ('{ident}');")
        for ident in ("0001", "0002", "0003")
    }
    kept = {path: path.read_bytes() for path in originals.values()}
    assert project.mg("squash", "all").returncode == 0
    (squashed,) = project.migrations_dir.glob("*_all.sql")
    return squashed, originals, kept


def test_status_lists_a_squashed_migration_beside_the_originals_it_replaces(
    tmp_path: Path, database_url: str
) -> None:
    from migretti_core.testing import Project

    project = Project(tmp_path / "proj", database_url)
    try:
        squashed, originals, kept = _squash_leaving_originals(project)
        path = originals["0002"]
        path.write_bytes(kept[path])

        refused = project.mg("apply")
        assert refused.returncode == 2, refused.stderr
        problem = refused.stderr.removeprefix("mg: error: ").strip()
        assert problem.startswith(
            f"migrations/{squashed.name}: mg squash wrote it to replace "
            "migrations/0002_m0002.sql, which is still there"
        ), problem

        # before: "no problems", exit 0 even with --exit-code
        done = project.mg("status")
        assert done.returncode == 0, done.stderr
        assert problem in done.stdout, done.stdout
        assert "no problems" not in done.stdout
        assert project.mg("status", "--exit-code").returncode == 3
        data = json.loads(project.mg("status", "--format", "json").stdout)
        assert data["ok"] is False
        assert data["problems"] == [problem]

        path.unlink()
        assert project.mg("status").stdout.count(squashed.name) == 0
    finally:
        project.close()


def test_an_original_brought_back_after_its_squashed_migration_ran_never_runs_again(
    tmp_path: Path, database_url: str
) -> None:
    from migretti_core.testing import Project

    project = Project(tmp_path / "proj", database_url)
    try:
        squashed, originals, kept = _squash_leaving_originals(project)
        assert project.mg("apply").returncode == 0
        path = originals["0002"]
        path.write_bytes(kept[path])  # back from an old branch
        expected = (
            f"migrations/{squashed.name}: mg squash wrote it to replace "
            "migrations/0002_m0002.sql, which is still there"
        )

        # before: exit 3 suggesting --allow-out-of-order, which then ran 0002 a second time
        for args in (("apply",), ("apply", "--allow-out-of-order"), ("apply", "--dry-run")):
            done = project.mg(*args)
            assert done.returncode == 2, (args, done.stderr)
            assert f"mg: error: {expected}" in done.stderr, done.stderr
            assert "pass --allow-out-of-order" not in done.stderr
        assert sorted(r[0] for r in project.sql("SELECT id FROM runs")) == [
            "0001",
            "0002",
            "0003",
        ]

        status = project.mg("status", "--exit-code")
        assert status.returncode == 3
        assert expected in status.stdout, status.stdout

        path.unlink()
        assert project.mg("status", "--exit-code").returncode == 0
    finally:
        project.close()
