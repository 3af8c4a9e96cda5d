"""A database migretti 0.10 managed keeps working: its tables, rows and checksums."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from migretti_core.testing import Project, migration_text, wait_until

ULIDS = {
    "users": "01HQ3Z1A0000000000000000AA",
    "orders": "01HQ3Z1B0000000000000000BB",
    "items": "01HQ3Z1C0000000000000000CC",
    "audit": "01HQ3Z1D0000000000000000DD",
}
# 0.10 applied users, then items, then orders (allowed out of order by hand): rollback must
# follow these times, not the ids.
APPLIED_AT_010 = {
    "users": "2024-03-01 09:00:00+00",
    "items": "2024-03-01 10:00:00+00",
    "orders": "2024-03-02 08:30:00+00",
}


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Iterator[Project]:
    project = Project(tmp_path / "proj", database_url)
    yield project
    project.close()


def _write_files(project: Project) -> dict[str, bytes]:
    """The project's files; ``orders`` has CRLF line ends, as written on Windows."""
    contents: dict[str, bytes] = {}
    for name, ident in ULIDS.items():
        text = migration_text(
            ident, name, f"CREATE TABLE {name} (id int PRIMARY KEY);", f"DROP TABLE {name};"
        )
        raw = text.encode()
        if name == "orders":
            raw = raw.replace(b"\n", b"\r\n")
        (project.migrations_dir / f"{ident}_{name}.sql").write_bytes(raw)
        contents[name] = raw
    return contents


def _database_as_010_left_it(project: Project, contents: dict[str, bytes], ddl_010: str) -> None:
    project.sql(ddl_010)
    for name, applied_at in APPLIED_AT_010.items():
        ident = ULIDS[name]
        checksum = hashlib.sha256(contents[name]).hexdigest()
        project.sql(f"CREATE TABLE {name} (id int PRIMARY KEY)")
        project.sql(
            "INSERT INTO _migrations (id, name, applied_at, checksum) VALUES (%s, %s, %s, %s)",
            (ident, name, applied_at, checksum),
        )
        project.sql(
            "INSERT INTO _migrations_log "
            "(migration_id, name, action, performed_at, performed_by, checksum) "
            "VALUES (%s, %s, 'UP', %s, 'deploy', %s)",
            (ident, name, applied_at, checksum),
        )


def _columns(project: Project, table: str) -> list[str]:
    rows = project.sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    return [str(r[0]) for r in rows]


def test_a_010_database_is_read_verified_applied_and_rolled_back(
    project: Project, ddl_010: str
) -> None:
    contents = _write_files(project)
    _database_as_010_left_it(project, contents, ddl_010)
    columns_010 = {t: _columns(project, t) for t in ("_migrations", "_migrations_log")}
    users, orders, items, audit = (ULIDS[k] for k in ("users", "orders", "items", "audit"))

    status = json.loads(project.mg("status", "--format", "json").stdout)
    assert status["counts"] == {"applied": 3, "pending": 1, "failed": 0, "running": 0}
    assert status["head"]["id"] == orders
    assert status["problems"] == []
    listed = json.loads(project.mg("list", "--format", "json").stdout)
    assert [(r["id"], r["status"]) for r in listed] == [
        (users, "applied"),
        (orders, "applied"),
        (items, "applied"),
        (audit, "pending"),
    ]
    assert listed[0]["applied_at"].startswith("2024-03-01T09:00:00")
    head = json.loads(project.mg("head", "--format", "json").stdout)
    assert head["id"] == orders
    verify = project.mg("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Reading changed nothing.
    assert {t: _columns(project, t) for t in columns_010} == columns_010

    done = project.mg("apply")
    assert done.returncode == 0, done.stderr
    assert audit in done.stdout
    assert project.tables() == {"users", "orders", "items", "audit"}
    for table, old_columns in columns_010.items():
        assert _columns(project, table)[: len(old_columns)] == old_columns
    kept = project.sql(
        "SELECT id, applied_at::text, checksum FROM _migrations WHERE id <> %s ORDER BY id",
        (audit,),
    )
    assert [(r[0], r[2]) for r in kept] == [
        (users, hashlib.sha256(contents["users"]).hexdigest()),
        (orders, hashlib.sha256(contents["orders"]).hexdigest()),
        (items, hashlib.sha256(contents["items"]).hexdigest()),
    ]
    assert project.value("SELECT status FROM _migrations WHERE id = %s", (audit,)) == "applied"
    assert project.log() == [(users, "UP"), (items, "UP"), (orders, "UP"), (audit, "UP")]
    assert project.mg("verify").returncode == 0

    # Application order: audit (now), orders (0.10, last), items, users.
    done = project.mg("rollback", "2")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"users", "items"}
    assert project.log()[-2:] == [(audit, "DOWN"), (orders, "DOWN")]
    done = project.mg("down")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"users"}
    assert project.log()[-1] == (items, "DOWN")
    assert set(project.statuses()) == {users}


def test_rollback_to_on_a_010_database_follows_applied_at(project: Project, ddl_010: str) -> None:
    contents = _write_files(project)
    _database_as_010_left_it(project, contents, ddl_010)
    (project.migrations_dir / f"{ULIDS['audit']}_audit.sql").unlink()
    nothing = project.mg("apply")
    assert nothing.returncode == 0, nothing.stderr
    status = json.loads(project.mg("status", "--format", "json").stdout)
    assert status["counts"]["applied"] == 3 and status["head"]["id"] == ULIDS["orders"]
    done = project.mg("rollback", "--to", ULIDS["users"])
    assert done.returncode == 0, done.stderr
    assert project.log()[-2:] == [(ULIDS["orders"], "DOWN"), (ULIDS["items"], "DOWN")]
    assert project.tables() == {"users"}


def test_upgrading_a_010_history_never_queues_readers_behind_a_held_table_lock(
    project: Project, ddl_010: str
) -> None:
    """Adding the new columns needs a brief exclusive lock on ``_migrations``. While another
    session holds a lock on it (an open transaction that read it), the upgrade gives up after
    ``table_lock_timeout`` instead of waiting forever with every ``mg status`` queued behind
    it, and says who holds the table."""
    import psycopg

    contents = _write_files(project)
    _database_as_010_left_it(project, contents, ddl_010)
    project.configure(extra="table_lock_timeout: 300ms\ntable_lock_retries: 1\n")
    reader = psycopg.connect(project.database_url, application_name="dashboard")
    try:
        reader.execute("SELECT count(*) FROM _migrations")  # its transaction stays open
        job = project.spawn("apply")

        def queued() -> bool:
            return bool(project.sql("SELECT 1 FROM pg_locks WHERE NOT granted"))

        wait_until(lambda: queued() or not job.running(), timeout=30)
        status = project.mg("status", timeout=30)
        assert status.returncode == 0, status.stderr
        done = project.finish(job, timeout=60)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert "history tables" in done.stderr and "dashboard" in done.stderr, done.stderr
        assert "apply_seq" not in _columns(project, "_migrations")
        assert ULIDS["audit"] not in project.statuses()
    finally:
        reader.close()
    again = project.mg("apply")
    assert again.returncode == 0, again.stderr
    assert "apply_seq" in _columns(project, "_migrations")
    assert project.statuses()[ULIDS["audit"]] == "applied"


@pytest.mark.parametrize(
    ("applied_as", "now"),
    [
        (b"\r\n", b"\n"),  # applied from a Windows checkout, now checked out on Linux
        (b"\r", b"\n"),  # classic Mac line ends
        (b"\xef\xbb\xbf\r\n", b"\n"),  # saved with a BOM by a Windows editor
        (b"\xef\xbb\xbf\n", b"\n"),  # the BOM alone removed
        (b"\xef\xbb\xbf\r\n", b"\r\n"),
    ],
    ids=["crlf-to-lf", "cr-to-lf", "bom-crlf-to-lf", "bom-to-none", "bom-crlf-to-crlf"],
)
def test_a_line_ending_change_since_010_applied_a_file_is_no_mismatch(
    project: Project, ddl_010: str, applied_as: bytes, now: bytes
) -> None:
    """0.10 recorded the checksum of a file's raw bytes. A file it applied with CRLF line
    ends (or a BOM) that git now checks out with LF holds the same migration: verify, status,
    apply and rollback take it as unchanged."""
    bom = b"\xef\xbb\xbf" if applied_as.startswith(b"\xef\xbb\xbf") else b""
    ending = applied_as[len(bom) :]
    ident = ULIDS["users"]
    lf = migration_text(
        ident, "users", "CREATE TABLE users (id int PRIMARY KEY);", "DROP TABLE users;"
    ).encode()
    as_applied = bom + lf.replace(b"\n", ending)
    project.sql(ddl_010)
    project.sql("CREATE TABLE users (id int PRIMARY KEY)")
    project.sql(
        "INSERT INTO _migrations (id, name, applied_at, checksum) VALUES (%s, 'users', now(), %s)",
        (ident, hashlib.sha256(as_applied).hexdigest()),
    )
    path = project.migrations_dir / f"{ident}_users.sql"
    now_bom = b"\xef\xbb\xbf" if now.startswith(b"\xef\xbb\xbf") else b""
    path.write_bytes(now_bom + lf.replace(b"\n", now[len(now_bom) :]))

    verify = project.mg("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    status = json.loads(project.mg("status", "--format", "json").stdout)
    assert status["problems"] == [], status
    listed = json.loads(project.mg("list", "--format", "json").stdout)
    assert [r["status"] for r in listed] == ["applied"]
    done = project.mg("rollback")
    assert done.returncode == 0, done.stderr
    assert project.tables() == set()


def test_an_edit_beyond_line_ends_since_010_is_still_a_mismatch(
    project: Project, ddl_010: str
) -> None:
    ident = ULIDS["users"]
    lf = migration_text(
        ident, "users", "CREATE TABLE users (id int PRIMARY KEY);", "DROP TABLE users;"
    ).encode()
    project.sql(ddl_010)
    project.sql(
        "INSERT INTO _migrations (id, name, applied_at, checksum) VALUES (%s, 'users', now(), %s)",
        (ident, hashlib.sha256(lf.replace(b"\n", b"\r\n")).hexdigest()),
    )
    edited = lf.replace(b"int PRIMARY KEY", b"bigint PRIMARY KEY")
    (project.migrations_dir / f"{ident}_users.sql").write_bytes(edited)
    verify = project.mg("verify")
    assert verify.returncode == 3, verify.stdout + verify.stderr
    assert "mismatch" in verify.stdout


def test_a_migration_010_applied_after_mg_upgraded_the_history_is_the_newest(
    project: Project,
) -> None:
    """A deploy still on 0.10 records a migration after mg 1.0 added its columns: 0.10 leaves
    apply_seq empty. That migration is the last applied: head, status and rollback say so."""
    for name in ("users", "orders", "items"):
        project.add(ULIDS[name], name, f"CREATE TABLE {name} (id int);", f"DROP TABLE {name};")
    done = project.mg("apply", "--to", ULIDS["orders"])
    assert done.returncode == 0, done.stderr
    items = ULIDS["items"]
    checksum = hashlib.sha256(project.path_of(items).read_bytes()).hexdigest()
    project.sql("CREATE TABLE items (id int)")  # as 0.10 applies it: no apply_seq
    project.sql(
        "INSERT INTO _migrations (id, name, checksum) VALUES (%s, 'items', %s)", (items, checksum)
    )

    head = json.loads(project.mg("head", "--format", "json").stdout)
    assert head["id"] == items
    status = json.loads(project.mg("status", "--format", "json").stdout)
    assert status["head"]["id"] == items and status["problems"] == [], status
    done = project.mg("down")
    assert done.returncode == 0, done.stderr
    assert project.tables() == {"users", "orders"}
    assert set(project.statuses()) == {ULIDS["users"], ULIDS["orders"]}
