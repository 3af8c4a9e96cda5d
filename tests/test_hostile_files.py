"""Migration and seed files that would make the server run something else than they say.

libpq sends a query as a C string: a NUL byte cuts it short, so ``DELETE ... \\0 WHERE`` would
delete every row and the history statements after it would never arrive. Such files are
refused before anything runs, through the real ``mg`` and against the suite's PostgreSQL.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project, assert_clean_error


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def with_rows(project: Project) -> None:
    project.add(
        "0001",
        "t",
        "CREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t SELECT generate_series(1, 5);",
        "DROP TABLE t;",
    )
    done = project.mg("apply")
    assert done.returncode == 0, done.stderr


def write_raw(project: Project, name: str, data: bytes) -> Path:
    path = project.migrations_dir / name
    path.write_bytes(data)
    return path


def file_error(done: object, where: str) -> str:
    stderr: str = done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 2, stderr  # type: ignore[attr-defined]
    assert where in stderr, stderr
    assert "NUL" in stderr, stderr
    assert "Traceback" not in stderr
    return stderr


# --- NUL bytes -----------------------------------------------------------------------------


def test_nul_in_a_transactional_migration_is_a_file_error_and_deletes_nothing(
    project: Project,
) -> None:
    with_rows(project)
    write_raw(project, "0002_delete_one.sql", b"-- migrate: up\nDELETE FROM t\0 WHERE id = 1;\n")

    file_error(project.mg("apply"), "0002_delete_one.sql:2:")
    file_error(project.mg("apply", "--dry-run"), "0002_delete_one.sql:2:")
    file_error(project.mg("up"), "0002_delete_one.sql:2:")

    assert project.value("SELECT count(*) FROM t") == 5
    assert project.statuses() == {"0001": "applied"}
    assert project.log() == [("0001", "UP")]


def test_nul_in_a_no_transaction_migration_runs_no_statement(project: Project) -> None:
    with_rows(project)
    write_raw(
        project,
        "0002_two.sql",
        b"-- migrate: no-transaction\n-- migrate: up\nINSERT INTO t VALUES (6);\n"
        b"INSERT INTO t VALUES (7)\0;\nINSERT INTO t VALUES (8);\n",
    )
    file_error(project.mg("apply"), "0002_two.sql:4:")
    assert project.value("SELECT count(*) FROM t") == 5
    assert project.statuses() == {"0001": "applied"}


def test_a_nul_anywhere_in_the_directory_stops_every_migration(project: Project) -> None:
    project.add_table("0001")
    write_raw(project, "0002_down.sql", b"-- migrate: up\nSELECT 1;\n-- migrate: down\nSELECT\0;\n")
    stderr = file_error(project.mg("apply"), "0002_down.sql:4:")
    assert "column" in stderr
    assert project.all_tables() == set()  # 0001 did not run either: checked before anything


def test_nul_in_a_down_section_blocks_the_rollback(project: Project) -> None:
    with_rows(project)
    path = project.path_of("0001")
    path.write_bytes(path.read_bytes().replace(b"DROP TABLE t;", b"DROP TABLE t\0 CASCADE;"))
    file_error(project.mg("rollback", "--no-verify"), "0001_t.sql:5:")
    assert project.value("SELECT count(*) FROM t") == 5


def test_utf16_file_is_refused_with_a_hint(project: Project) -> None:
    write_raw(project, "0001_wide.sql", "-- migrate: up\nSELECT 1;\n".encode("utf-16-le"))
    stderr = file_error(project.mg("apply"), "0001_wide.sql:1:")
    assert "UTF-16" in stderr
    assert project.all_tables() == set()


def test_nul_in_a_seed_is_a_file_error_and_no_seed_runs(project: Project) -> None:
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "01_first.sql").write_bytes(b"CREATE TABLE seeded (id int);\n")
    (seeds / "02_cut.sql").write_bytes(b"INSERT INTO seeded\0 VALUES (1);\n")
    for args in (("seed",), ("seed", "--dry-run"), ("seed", "02_cut")):
        file_error(project.mg(*args), "02_cut.sql:1:")
    assert project.all_tables() == set()


def test_a_file_name_that_is_not_utf8_is_a_file_error_before_anything_runs(
    project: Project,
) -> None:
    import os

    project.add("0001", "first", "CREATE TABLE first (id int);")
    # PostgreSQL cannot store the name in the history: refused before 0001 runs, not when
    # the bad file's history row is written
    bad = os.fsencode(project.migrations_dir) + b"/0002_caf\xe9.sql"
    with open(bad, "wb") as handle:
        handle.write(b"-- migrate: up\nCREATE TABLE second (id int);\n")
    for args in (("apply",), ("apply", "--dry-run"), ("status",)):
        done = project.mg(*args)
        assert done.returncode == 2, done.stderr
        assert "0002_caf\\xe9.sql:1:" in done.stderr, done.stderr
        assert "UTF-8" in done.stderr and "Traceback" not in done.stderr
    assert project.all_tables() == set()
    os.unlink(bad)

    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "01_first.sql").write_bytes(b"CREATE TABLE seeded (id int);\n")
    with open(os.fsencode(seeds) + b"/02_caf\xe9.sql", "wb") as handle:
        handle.write(b"INSERT INTO seeded VALUES (1);\n")
    done = project.mg("seed")
    assert done.returncode == 2, done.stderr
    assert "02_caf\\xe9.sql:1:" in done.stderr and "UTF-8" in done.stderr, done.stderr
    assert "postgres" not in done.stderr
    assert project.all_tables() == set()


# --- entries that are not files ------------------------------------------------------------


def test_a_sql_entry_that_is_not_a_file_is_an_error_never_skipped(project: Project) -> None:
    import os

    project.add("0001", "first", "CREATE TABLE first (id int);")
    (project.migrations_dir / "0002_moved.sql").symlink_to("/nonexistent/0002_moved.sql")
    os.mkfifo(project.migrations_dir / "0003_pipe.sql")
    (project.migrations_dir / "0004_subdir.sql").mkdir()  # a directory is no migration
    for args in (("apply",), ("status",), ("lint", "--all")):
        done = project.mg(*args)
        assert done.returncode == 2, done.stderr
        assert "0002_moved.sql: a dangling symbolic link" in done.stderr
        assert "0003_pipe.sql: not a regular file" in done.stderr
        assert "0004_subdir" not in done.stderr and "Traceback" not in done.stderr
    assert project.all_tables() == set()

    (project.migrations_dir / "0002_moved.sql").unlink()
    (project.migrations_dir / "0003_pipe.sql").unlink()
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "01_zero.sql").symlink_to("/dev/zero")
    done = project.mg("seed")
    assert done.returncode == 2, done.stderr
    assert "01_zero.sql: not a regular file" in done.stderr


def test_a_file_ending_in_upper_case_sql_is_warned_about_once_never_skipped_silently(
    project: Project,
) -> None:
    """``0002_orders.SQL`` is no migration (as for migretti 0.10: a database it manages must
    not find new migrations); apply and status say so once per run, naming the file."""
    import json

    project.add("0001", "first", "CREATE TABLE first (id int);")
    upper = project.migrations_dir / "0002_orders.SQL"
    upper.write_text("-- migrate: up\nCREATE TABLE orders (id int);\n", encoding="utf-8")
    (project.migrations_dir / "0003_mixed.Sql").write_text("-- migrate: up\nSELECT 1;\n")
    (project.migrations_dir / "0004_dir.SQL").mkdir()  # a directory is no migration file
    expected = (
        "migrations/0002_orders.SQL is not read as a migration: migration files must end "
        "in lowercase .sql; rename it to 0002_orders.sql"
    )
    for args in (("apply",), ("status",), ("status", "--format", "json")):
        done = project.mg(*args)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count(expected) == 1, done.stderr
        assert done.stderr.count("0003_mixed.Sql is not read as a migration") == 1
        assert "0004_dir" not in done.stderr and "Traceback" not in done.stderr
    assert project.statuses() == {"0001": "applied"}

    done = project.mg("--json-log", "status")
    events = [json.loads(line) for line in done.stderr.splitlines()]
    ignored = [e for e in events if e["event"] == "migration.file_ignored"]
    assert [(e["level"], e["path"]) for e in ignored] == [
        ("warning", "migrations/0002_orders.SQL"),
        ("warning", "migrations/0003_mixed.Sql"),
    ]

    # a control character in the name is shown escaped
    upper.rename(project.migrations_dir / "0002_ord\x1bers.SQL")
    done = project.mg("status")
    assert "0002_ord\\x1bers.SQL is not read" in done.stderr and "\x1b" not in done.stderr


# --- errors point at the user's file ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("INSERT INTO t VALUES (6);\n/* a comment left open\nINSERT INTO t VALUES (7);", "/*"),
        ("CREATE FUNCTION f() RETURNS int AS $$\nSELECT 1;\n", "$$"),
        ("INSERT INTO t VALUES (6);\nSELECT 'no end;\nSELECT 1;", "'"),
        # the open quote is the file's last line: the server's error falls in mg's history
        # statement, which must not be quoted
        ("INSERT INTO t VALUES (6);\nSELECT 'abc;", "'"),
    ],
)
def test_unterminated_comment_or_quote_is_a_problem_of_the_file_and_line(
    project: Project, sql: str, what: str
) -> None:
    with_rows(project)
    project.add("0002", "open", sql)
    for args in (("apply",), ("apply", "--dry-run")):
        done = project.mg(*args)
        assert done.returncode == 1, done.stderr
        assert "0002_open.sql:" in done.stderr, done.stderr
        line = 2 + next(n for n, text in enumerate(sql.split("\n")) if what in text)
        assert f"0002_open.sql:{line}:" in done.stderr, done.stderr
        assert "unterminated" in done.stderr
        assert "_migrations" not in done.stderr
        assert "recording" not in done.stderr
        assert "checksum" not in done.stderr and "apply_seq" not in done.stderr
    assert project.value("SELECT count(*) FROM t") == 5
    assert project.statuses() == {"0001": "applied"}


def test_an_unclosed_statement_is_reported_at_the_end_of_the_file(project: Project) -> None:
    project.add("0001", "open", "CREATE TABLE t (id int,\n  name text")
    done = project.mg("apply")
    assert done.returncode in (1, 2), done.stderr
    assert "0001_open.sql:3:" in done.stderr, done.stderr
    assert "_migrations" not in done.stderr and "recording" not in done.stderr
    assert project.tables() == set()
    assert project.statuses() == {}


def test_a_missing_migrations_dir_named_in_mg_yaml_is_an_error(project: Project) -> None:
    project.configure(extra="migrations_dir: db/migrations\n")
    for args in (("apply",), ("status",), ("list",)):
        done = project.mg(*args)
        assert done.returncode == 2, done.stderr
        assert "db/migrations" in done.stderr and "does not exist" in done.stderr
        assert str(project.root) not in done.stderr  # relative, as mg shows paths elsewhere
        assert "nothing to apply" not in done.stderr
    (project.root / "db").mkdir()
    (project.root / "db" / "migrations").symlink_to(project.root / "gone")
    done = project.mg("apply")
    assert done.returncode == 2, done.stderr
    assert "symlink" in done.stderr and "gone" in done.stderr
    assert ": db/migrations is a symlink to " in done.stderr, done.stderr


def test_a_file_in_place_of_the_migrations_directory_is_an_error(project: Project) -> None:
    """The default migrations/ may be missing (no migration yet), but a file in its place is
    not "nothing to apply": every command says what is in the way, mg create too."""
    project.add("0001", "t", "CREATE TABLE t (id int);", "DROP TABLE t;")
    assert project.mg("apply").returncode == 0
    shutil.rmtree(project.migrations_dir)
    project.migrations_dir.write_text("not a directory\n")
    said = "the migrations directory migrations is not a directory"  # as the other paths
    for args in (("apply",), ("status",), ("lint",), ("create", "next")):
        done = project.mg(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(f"mg: error: {said}\n"), done.stderr
        assert "hint: move it out of the way, or set migrations_dir in mg.yaml" in done.stderr
        assert "nothing to apply" not in done.stderr and "File exists" not in done.stderr
    assert project.migrations_dir.read_text() == "not a directory\n"


def test_create_warns_of_sql_apply_will_refuse_in_a_transaction(project: Project) -> None:
    """`mg create` says at once, with the file's line, what `mg apply` would only say later;
    with --no-transaction the same SQL is a migration apply runs, without a warning."""
    sql = "CREATE TABLE t (id bigint);\nCREATE INDEX CONCURRENTLY t_id ON t (id);"
    done = project.mg("create", "idx", "--up", sql)
    assert done.returncode == 0, done.stderr
    [path] = project.migrations_dir.iterdir()
    assert done.stdout == f"migrations/{path.name}\n"
    assert done.stderr == (
        f"mg: warning: mg apply will refuse migrations/{path.name}:6: CREATE INDEX "
        "CONCURRENTLY cannot run inside a transaction block; add `-- migrate: "
        "no-transaction` to the header\n"
    )
    assert project.mg("apply").returncode == 2  # as the warning said
    path.unlink()
    done = project.mg("create", "idx", "--up", sql, "--no-transaction")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert project.mg("apply").returncode == 0
    assert project.value("SELECT count(*) FROM pg_indexes WHERE indexname = 't_id'") == 1


def test_create_refuses_sql_holding_a_migrate_marker(project: Project) -> None:
    for option in ("--up", "--down"):
        done = project.mg("create", "both", option, "SELECT 1;\n-- migrate: down\nSELECT 2;")
        assert done.returncode == 2, done.stderr
        assert "-- migrate:" in done.stderr
        assert list(project.migrations_dir.iterdir()) == []
    # a lone CR ends a line for mg's parser (as CRLF does): the marker after it is a line too
    for sql in ("SELECT 1;\r-- migrate: down", "SELECT 1;\r\n-- migrate: down\r"):
        done = project.mg("create", "cr", "--up", sql)
        assert done.returncode == 2, done.stderr
        assert "-- migrate:" in done.stderr
        assert list(project.migrations_dir.iterdir()) == []
    done = project.mg("create", "fine", "--up", "SELECT 1; -- migrate: not at line start")
    assert done.returncode == 0, done.stderr
    assert project.mg("apply").returncode == 0


# --- a file that keeps growing -------------------------------------------------------------


class Grower:
    """Appends blank lines to a migration file from a thread, as fast as it can (as
    ``yes '' >> FILE`` would), until stopped. Past ``cap`` bytes it cuts the file back to what
    it held at the start and goes on growing, so it never fills the disk however long it runs."""

    # 64 KiB of blank lines: a reader may see part of a write, and any part of it leaves the
    # file a valid migration (a comment line cut after its first "-" would not be)
    CHUNK = b"\n" * 65536

    def __init__(self, path: Path, cap: int = 8 << 20) -> None:
        import threading

        self.path, self.cap = path, cap
        self.start_size = path.stat().st_size
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import os

        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            size = self.start_size
            while not self.stop.is_set():
                size += os.write(fd, self.CHUNK)
                if size > self.cap:
                    os.ftruncate(fd, self.start_size)
                    size = self.start_size
        finally:
            os.close(fd)

    def __enter__(self) -> Grower:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def growing(project: Project, ident: str) -> Path:
    """A valid migration of some 2 MB: reading it takes long enough to see the file grow."""
    return project.add(ident, "growing", "CREATE TABLE grown (id bigint);\n" + "-- pad\n" * 300_000)


def test_a_file_growing_while_mg_reads_it_is_a_file_error_never_read_without_end(
    project: Project,
) -> None:
    project.add_table("0001")
    path = growing(project, "0002")
    seen = []
    with Grower(path):
        # a read may fall between two appends and see the file whole: that run reads what the
        # file held when opened (and, on a slow machine, may find it changed when it looks
        # again); one that sees it grow while reading says so
        for _ in range(10):
            done = project.mg("status", timeout=60)
            seen.append(done)
            if "changed while mg was reading it" in done.stderr:
                break
    stderr = assert_clean_error(
        done, "migrations/0002_growing.sql: changed while mg was reading it"
    )
    assert re.search(r"it held \d+ bytes when opened", stderr), stderr
    for before in seen[:-1]:
        if before.returncode != 0:
            assert_clean_error(before, "migrations/0002_growing.sql: changed while mg was running")


def test_apply_of_a_file_growing_while_mg_reads_it_applies_nothing(project: Project) -> None:
    project.add("0001", "first", "CREATE TABLE first (id bigint);")
    path = growing(project, "0002")
    with Grower(path):
        for _ in range(10):
            done = project.mg("apply", timeout=60)
            if done.returncode == 0:
                # the grower did not get to run while mg read the file, nor until the file
                # was applied: applied as read, which is right; start again from nothing
                project.sql("DROP TABLE first; DROP TABLE grown")
                project.sql("DELETE FROM _migrations; DELETE FROM _migrations_log")
                continue
            assert done.returncode == 2, done.stderr  # seen changing: never applied
            assert "0002_growing.sql" in done.stderr and "Traceback" not in done.stderr
            if "changed while mg was reading it" in done.stderr:
                break
    assert_clean_error(done, "migrations/0002_growing.sql: changed while mg was reading it")
    assert project.tables() == set() and project.statuses() == {}


def test_a_file_is_read_no_further_than_its_size_when_opened() -> None:
    import os

    from migretti_core.textfiles import read_bytes

    # a pipe reports size 0 and holds 100 bytes: mg reads one byte past the size, not on to
    # the end (which a writer that never stops never gives)
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 100)
        os.close(w)
        with pytest.raises(OSError, match=r"changed while mg was reading it \(it held 0 bytes"):
            read_bytes(Path(f"/proc/self/fd/{r}"))
        assert len(os.read(r, 1000)) == 99
    finally:
        os.close(r)


def test_a_seed_growing_while_mg_reads_it_runs_no_seed(project: Project) -> None:
    seeds = project.root / "seeds"
    seeds.mkdir()
    (seeds / "01_first.sql").write_bytes(b"CREATE TABLE seeded (id bigint);\n")
    path = seeds / "02_grows.sql"
    path.write_bytes(b"INSERT INTO seeded VALUES (1);\n" + b"-- pad\n" * 300_000)
    with Grower(path):
        for _ in range(10):
            done = project.mg("seed", "--all", timeout=60)
            if "changed while mg was reading it" in done.stderr:
                break
            # read whole between two appends: ran as read (or, read whole, was seen changed
            # when read again); start again from nothing
            if done.returncode != 0:
                assert_clean_error(done, "seeds/02_grows.sql: changed while mg was running")
            project.sql("DROP TABLE IF EXISTS seeded; DROP TABLE IF EXISTS _migrations_seeds")
    assert_clean_error(done, "seeds/02_grows.sql: changed while mg was reading it")
    assert project.tables() == set()
