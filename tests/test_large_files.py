"""Migration files of ON_DEMAND_BYTES or more: not kept in memory, read again (and checked
against their checksum) whenever their text is needed; within an apply or rollback, the
one mg is about to run is kept from parsing to its query."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from migretti_core.errors import MigrationFileError
from migretti_core.testing import Project
from migretti_core.types import (
    ON_DEMAND_BYTES,
    FileText,
    Migration,
    keep_file_bytes,
    keeping_file_bytes,
    read_once,
)
from migretti_plugins.files.parse import parse_migration

ROWS = 12_000  # about 1.3 MB of INSERTs: over ON_DEMAND_BYTES


def big_up(rows: int = ROWS, bad_row: int | None = None, word: str = "x") -> str:
    lines = ["CREATE TABLE big (id bigint PRIMARY KEY, note text);"]
    for i in range(rows):
        column = "nope" if i == bad_row else "note"
        lines.append(f"INSERT INTO big (id, {column}) VALUES ({i}, '{word * 90} it''s {i}');")
    return "\n".join(lines)


def write(path: Path, up: str, down: str = "DROP TABLE big;") -> bytes:
    data = f"-- migration: big\n\n-- migrate: up\n{up}\n\n-- migrate: down\n{down}\n".encode()
    path.write_bytes(data)
    return data


def test_a_large_file_is_read_on_demand_and_reads_as_a_small_one_does(tmp_path: Path) -> None:
    # Non-ASCII text, so character and byte offsets differ.
    path = tmp_path / "0001_big.sql"
    data = write(path, big_up(word="é"))
    assert len(data) >= ON_DEMAND_BYTES
    migration = parse_migration(path, data)
    assert isinstance(migration.kept("text"), FileText)
    assert isinstance(migration.kept("up_sql"), FileText)
    assert migration.kept("down_sql") == "DROP TABLE big;\n"  # a small section is kept

    text = data.decode("utf-8")
    up_start = text.index("-- migrate: up\n") + len("-- migrate: up\n")
    down_marker = text.index("-- migrate: down\n")
    assert migration.text == text
    assert migration.up_sql == text[up_start:down_marker]
    assert migration.down_sql == "DROP TABLE big;\n"
    assert len(migration.kept("up_sql")) == down_marker - up_start  # type: ignore[arg-type]
    assert migration.up_line == 4 and migration.down_line == ROWS + 7
    assert migration.section("down") == ("DROP TABLE big;\n", ROWS + 7)
    assert migration.has_down
    assert migration.checksum == hashlib.sha256(data).hexdigest()
    # Equal to a parse of the same file; a copy made with dataclasses.replace reads as well.
    assert migration == parse_migration(path, data)
    assert dataclasses.replace(migration, title="t").up_sql == migration.up_sql
    in_memory = dataclasses.replace(migration)  # reads the texts: str fields
    assert isinstance(in_memory.kept("up_sql"), str)
    assert in_memory == migration and hash(in_memory) == hash(migration)
    assert Migration(**migration.__dict__) == migration  # what plugins copy with
    assert "FileText(" in repr(migration) and len(repr(migration)) < 2000


def test_a_large_file_changed_after_parsing_is_refused_when_read(tmp_path: Path) -> None:
    path = tmp_path / "0001_big.sql"
    data = write(path, big_up())
    migration = parse_migration(path, data)
    path.write_bytes(data.replace(b"it''s 7'", b"it''s 8'"))  # the same size
    with pytest.raises(MigrationFileError, match="changed while mg was running"):
        _ = migration.up_sql
    path.unlink()
    with pytest.raises(MigrationFileError, match="cannot read it again"):
        _ = migration.text


def test_within_read_once_a_large_file_is_read_once(tmp_path: Path) -> None:
    path = tmp_path / "0001_big.sql"
    migration = parse_migration(path, write(path, big_up()))
    with read_once():
        first = migration.up_sql
        path.unlink()  # not read again: the text read first is kept until the block ends
        assert migration.up_sql is first
    with pytest.raises(MigrationFileError, match="cannot read it again"):
        _ = migration.up_sql


def test_the_kept_file_serves_checks_and_query_once_then_goes(tmp_path: Path) -> None:
    """Inside ``keeping_file_bytes`` the file being run is not read again for its checks and
    query (it may even be gone), and once the query took it, it is read again: a retry sends
    the file as it is then, checked against its checksum."""
    path = tmp_path / "0001_big.sql"
    other = tmp_path / "0002_other.sql"
    data = write(path, big_up())
    write(other, big_up(word="y"))
    migration = parse_migration(path, data)
    with keeping_file_bytes():
        keep_file_bytes(path, migration, data)
        path.unlink()
        with read_once():
            up = migration.up_sql  # the pre-flight checks and lint
        with read_once():  # kept beyond the first block, until the query takes them
            assert migration.up_sql == up
        query = bytearray()
        migration.kept("up_sql").append_utf8(query)  # type: ignore[union-attr]
        assert query.decode() == up
        with pytest.raises(MigrationFileError, match="cannot read it again"):
            _ = migration.up_sql
        # Another large file read in between lets the kept one go: never two held at once.
        write(path, big_up())
        keep_file_bytes(path, migration, data)
        second = parse_migration(other, other.read_bytes())
        path.unlink()
        assert second.up_sql.startswith("CREATE TABLE big")
        with pytest.raises(MigrationFileError, match="cannot read it again"):
            _ = migration.up_sql
        # Read outside read_once (a no-transaction migration is split from its text, which
        # the caller keeps): the bytes are let go at once, not held beside that text.
        write(path, big_up())
        keep_file_bytes(path, migration, data)
        text = migration.up_sql
        path.unlink()
        with pytest.raises(MigrationFileError, match="cannot read it again"):
            migration.kept("up_sql").append_utf8(bytearray())  # type: ignore[union-attr]
        assert text == up
    # Outside the block nothing is kept.
    write(path, big_up())
    keep_file_bytes(path, migration, data)
    path.unlink()
    with pytest.raises(MigrationFileError, match="cannot read it again"):
        _ = migration.up_sql


def test_a_small_file_keeps_its_text(tmp_path: Path) -> None:
    path = tmp_path / "0001_small.sql"
    data = write(path, big_up(rows=10))
    migration = parse_migration(path, data)
    assert isinstance(migration.kept("up_sql"), str)
    assert isinstance(migration.kept("text"), str)


def test_ignore_comments_of_a_large_file_are_those_of_its_text(tmp_path: Path) -> None:
    from migretti_plugins.lint.linter import _text_to_up_end, find_ignores

    up = big_up() + "\n-- mg:lint-ignore ban-drop-table\nDROP TABLE big;"
    path = tmp_path / "0001_big.sql"
    data = (
        f"-- migration: big\n-- squawk-ignore-file require-timeout-settings\n\n"
        f"-- migrate: up\n{up}\n\n-- migrate: down\n-- mg:lint-ignore x\nSELECT 1;\n"
    ).encode()
    path.write_bytes(data)
    migration = parse_migration(path, data)
    assert isinstance(migration.kept("up_sql"), FileText)

    def found(text: str | None, m: Migration) -> list[tuple[int, frozenset[str], bool]]:
        return [(i.line, i.rules, i.whole_file) for i in find_ignores(m, text)]

    in_memory = dataclasses.replace(migration)
    expected = found(None, in_memory)
    assert expected == [
        (2, frozenset({"require-timeout-settings"}), True),
        (ROWS + 6, frozenset({"ban-drop-table"}), False),
    ]
    assert found(_text_to_up_end(migration, migration.up_sql), migration) == expected
    assert found(None, migration) == expected


@pytest.mark.pg
def test_a_large_migration_fails_at_its_file_line_then_applies(
    tmp_path: Path, database_url: str
) -> None:
    project = Project(tmp_path / "proj", database_url)
    try:
        path = project.migrations_dir / "0001_big.sql"
        write(path, big_up(bad_row=9_000))
        failed = project.mg("apply", "--no-lint")
        assert failed.returncode != 0, failed.stderr
        # The header is 3 lines and the CREATE TABLE one: row 9000 is on line 9005.
        assert "migrations/0001_big.sql:9005:" in failed.stderr, failed.stderr
        assert "nope" in failed.stderr
        assert "big" not in project.tables()

        data = write(path, big_up())
        done = project.mg("apply")
        assert done.returncode == 0, done.stderr
        assert project.value("SELECT count(*) FROM big") == ROWS
        # The checksum migretti 0.10 records: SHA-256 of the file's bytes.
        assert (
            project.value("SELECT checksum FROM _migrations WHERE id = '0001'")
            == hashlib.sha256(data).hexdigest()
        )
        status = project.mg("status")
        assert status.returncode == 0, status.stderr
    finally:
        project.close()


@pytest.mark.pg
def test_a_large_migration_edited_while_mg_runs_runs_as_parsed(
    tmp_path: Path, database_url: str
) -> None:
    """As a small file's: what runs and is recorded is the text mg parsed and checksummed,
    and the edit shows as a checksum mismatch afterwards."""
    project = Project(tmp_path / "proj", database_url)
    try:
        project.configure(
            extra="hooks:\n  pre_apply: printf 'DROP TABLE big;\\n' >> migrations/0001_big.sql\n"
        )
        data = write(project.migrations_dir / "0001_big.sql", big_up())
        done = project.mg("apply")
        assert done.returncode == 0, done.stderr
        assert project.value("SELECT count(*) FROM big") == ROWS
        assert (
            project.value("SELECT checksum FROM _migrations WHERE id = '0001'")
            == hashlib.sha256(data).hexdigest()
        )
        status = project.mg("status")
        assert "modified: migrations/0001_big.sql changed since it was applied" in status.stdout
    finally:
        project.close()


@pytest.mark.pg
def test_two_large_migrations_apply_and_roll_back(tmp_path: Path, database_url: str) -> None:
    """Each large file's section is sent whole, whichever of them mg still holds: the
    second one parsed is held, the first is read again (and checked) when it runs."""
    project = Project(tmp_path / "proj", database_url)
    try:
        for number, table in (("0001", "big"), ("0002", "bigger")):
            up = big_up().replace("TABLE big ", f"TABLE {table} ").replace(" big ", f" {table} ")
            down = "\n".join(f"DELETE FROM {table} WHERE id = {i};" for i in range(ROWS))
            write(
                project.migrations_dir / f"{number}_{table}.sql",
                up,
                down + f"\nDROP TABLE {table};",
            )
        done = project.mg("apply")
        assert done.returncode == 0, done.stderr
        assert project.value("SELECT count(*) FROM big") == ROWS
        assert project.value("SELECT count(*) FROM bigger") == ROWS
        back = project.mg("rollback", "2")
        assert back.returncode == 0, back.stderr
        assert {"big", "bigger"} & set(project.tables()) == set()
        assert project.statuses() == {}
    finally:
        project.close()


@pytest.mark.pg
@pytest.mark.parametrize("psycopg_only", [False, True], ids=["libpq", "psycopg"])
def test_a_large_migration_beyond_ascii_is_sent_as_written(
    tmp_path: Path, database_url: str, psycopg_only: bool
) -> None:
    """A large file goes to the server as its own bytes: characters of two, three and four
    bytes arrive as written, and an error after them still names its line."""
    project = Project(tmp_path / "proj", database_url)
    env = {"MG_PSYCOPG_ONLY": "1"} if psycopg_only else {}
    try:
        path = project.migrations_dir / "0001_big.sql"
        write(path, big_up(bad_row=11_000, word="é€😀"))
        failed = project.mg("apply", "--no-lint", env=env)
        assert failed.returncode != 0, failed.stderr
        assert "migrations/0001_big.sql:11005:" in failed.stderr, failed.stderr
        assert "big" not in project.tables()

        write(path, big_up(word="é€😀"))
        done = project.mg("apply", env=env)
        assert done.returncode == 0, done.stderr
        assert project.value("SELECT count(*) FROM big") == ROWS
        expected = f"{'é€😀' * 90} it's {ROWS - 1}"
        assert project.value(f"SELECT note FROM big WHERE id = {ROWS - 1}") == expected
    finally:
        project.close()


def test_a_line_of_a_string_is_no_ignore_comment_in_a_large_file(tmp_path: Path) -> None:
    """A large data migration's strings are not comments: a string line that reads like an
    ignore comment neither silences the DROP TABLE on the next line nor counts as unused."""
    project = Project(tmp_path / "proj", "postgresql://nobody@localhost:1/none")
    path = project.migrations_dir / "0001_big.sql"
    up = (
        big_up()
        + "\nINSERT INTO big (id, note) VALUES (-1, 'first line\n-- squawk-ignore ban-drop-table');"
        + "\nDROP TABLE other;"
    )
    write(path, up)
    assert path.stat().st_size >= ON_DEMAND_BYTES
    done = project.mg("lint", "--format", "json")
    rules = [finding["rule"] for finding in json.loads(done.stdout)["findings"]]
    assert "ban-drop-table" in rules, done.stdout
    assert "unused-ignore" not in rules, done.stdout


# A large ASCII file is parsed as its bytes, any other as decoded text: both must read every
# file alike, including the ASCII characters a str pattern takes as blanks (\x1c-\x1f).
_FILLER = "SELECT 1;\n" * (ON_DEMAND_BYTES // 10 + 1)
_LAYOUTS = {
    "plain": "-- migration: t\n-- id: 0001\n\n-- migrate: up\n"
    f"{_FILLER}\n-- migrate: down\nDROP;\n",
    "odd blanks": "\x1c-- migrate: no-transaction\n--\x1dmigrate\x1f:\x1eup\x1c\n"
    f"{_FILLER}\x0b--\tMIGRATE :\x0cDown \n\x1f\n",
    "no-transaction": f"-- migrate: no-transaction\n-- migrate: up\n{_FILLER}",
    "comment, no directive": f"-- migrate: up\n{_FILLER}x -- migrate: down\n",
    "blank up": f"-- migrate: up\n \x1c\t\n\x1f\n-- migrate: down\n{_FILLER}",
    "unknown directive": f"-- migrate: up\n{_FILLER}-- migrate: sideways\n",
    "second up": f"-- migrate: up\n{_FILLER}\n -- migrate: up\n",
    "down first": f"-- migrate: down\n{_FILLER}-- migrate: up\nSELECT 2;\n",
    "no-transaction late": f"-- migrate: up\n{_FILLER}-- migrate: no-transaction\n",
    "no up": f"-- migration: t\n{_FILLER}",
    "sql before up": f"SELECT 0;\n-- migrate: up\n{_FILLER}",
    "nul": f"-- migrate: up\n{_FILLER}SELECT '\0';\n",
    "id mismatch": f"-- id: 0002\n-- migrate: up\n{_FILLER}",
}


def _parsed(path: Path, data: bytes) -> tuple[Any, ...]:
    try:
        m = parse_migration(path, data)
    except MigrationFileError as exc:
        return ("error", str(exc))
    return (m.id, m.name, m.title, m.checksum, m.transactional, m.up_line, m.down_line,
            m.text, m.up_sql, m.down_sql)  # fmt: skip


@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_a_large_ascii_file_parses_as_its_decoded_text_does(
    tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from migretti_plugins.files import parse

    path = tmp_path / "0001_t.sql"
    data = _LAYOUTS[layout].encode("ascii")
    path.write_bytes(data)
    assert parse._parsed_as_bytes(data)
    as_bytes = _parsed(path, data)
    monkeypatch.setattr(parse, "_parsed_as_bytes", lambda raw: False)
    assert as_bytes == _parsed(path, data)
