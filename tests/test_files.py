"""The migration file format (docs/migration-files.md), without a database."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from migretti_core.errors import MigrationFileError, UsageError
from migretti_core.textfiles import checksum, normalize_text, sha256_hex, slugify
from migretti_plugins.files.parse import (
    FILENAME_RE,
    create_migration_file,
    discover,
    parse_migration,
    render_migration,
)

GOOD = (
    "-- migration: Add users\n"
    "-- id: 01ABC\n"
    "\n"
    "-- migrate: up\n"
    "CREATE TABLE users (\n"
    "    id int PRIMARY KEY\n"
    ");\n"
    "\n"
    "-- migrate: down\n"
    "DROP TABLE users;\n"
)


def parse(text: str, filename: str = "01ABC_add_users.sql") -> object:
    return parse_migration(Path("migrations") / filename, text.encode("utf-8"))


def problems_of(text: str, filename: str = "01ABC_add_users.sql") -> list[str]:
    with pytest.raises(MigrationFileError) as info:
        parse(text, filename)
    return info.value.problems


def test_good_file_parses_into_sections() -> None:
    m = parse_migration(Path("01ABC_add_users.sql"), GOOD.encode())
    assert m.id == "01ABC"
    assert m.name == "add_users"
    assert m.title == "Add users"
    assert m.transactional is True
    assert m.up_sql == "CREATE TABLE users (\n    id int PRIMARY KEY\n);\n\n"
    assert m.down_sql == "DROP TABLE users;\n"
    assert m.has_down
    assert m.text == GOOD
    assert m.checksum == hashlib.sha256(GOOD.encode()).hexdigest()


def test_section_lines_map_back_to_file_lines() -> None:
    m = parse_migration(Path("01ABC_add_users.sql"), GOOD.encode())
    file_lines = GOOD.split("\n")
    up_lines = m.up_sql.split("\n")
    # "id int PRIMARY KEY" is line 2 of up_sql and line 6 of the file.
    within = next(i for i, line in enumerate(up_lines, start=1) if "PRIMARY KEY" in line)
    assert m.up_line + within - 1 == 6
    assert file_lines[m.up_line + within - 2] == up_lines[within - 1]
    assert m.down_line is not None and m.down_sql is not None
    assert file_lines[m.down_line - 1] == "DROP TABLE users;"


def test_directives_tolerate_spacing_and_case() -> None:
    text = "--  MIGRATE:  No-Transaction\n--migrate:UP\nVACUUM;\n  --  migrate :  Down  \n"
    m = parse_migration(Path("7_vac.sql"), text.encode())
    assert m.transactional is False
    assert m.up_sql == "VACUUM;\n"
    assert m.down_sql == ""


def test_no_transaction_flag_in_header() -> None:
    m = parse("-- migrate: no-transaction\n-- migrate: up\nCREATE INDEX CONCURRENTLY i ON t (c);\n")
    assert m.transactional is False  # type: ignore[attr-defined]


def test_no_transaction_after_up_is_refused() -> None:
    problems = problems_of("-- migrate: up\nSELECT 1;\n-- migrate: no-transaction\n")
    assert problems == [
        "01ABC_add_users.sql:3: `-- migrate: no-transaction` must come before "
        "`-- migrate: up`, in the header"
    ]


def test_missing_down_section_is_allowed() -> None:
    m = parse_migration(Path("01_x.sql"), b"-- migrate: up\nSELECT 1;\n")
    assert m.down_sql is None
    assert m.down_line is None
    assert not m.has_down


def test_empty_down_body_has_no_down() -> None:
    m = parse_migration(Path("01_x.sql"), b"-- migrate: up\nSELECT 1;\n-- migrate: down\n")
    assert m.down_sql == ""
    assert not m.has_down


def test_sql_before_up_names_the_line() -> None:
    problems = problems_of("-- migration: x\n\nCREATE TABLE t();\n-- migrate: up\nSELECT 1;\n")
    assert len(problems) == 1
    assert problems[0].startswith("01ABC_add_users.sql:3: SQL before the `-- migrate: up`")


def test_no_up_marker_is_reported_at_line_one() -> None:
    problems = problems_of("CREATE TABLE t();\n")
    assert problems == ["01ABC_add_users.sql:1: no `-- migrate: up` marker"]


def test_empty_up_section_is_reported_at_the_marker() -> None:
    text = "-- migration: x\n\n-- migrate: up\n\n  \n-- migrate: down\nDROP TABLE t;\n"
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].startswith("01ABC_add_users.sql:3: empty up section")


def test_an_up_section_of_comments_only_is_a_migration_that_changes_nothing() -> None:
    text = (
        "-- migration: x\n\n-- migrate: up\n\n-- only a comment\n-- migrate: down\nDROP TABLE t;\n"
    )
    assert parse(text, "01ABC_add_users.sql").up_sql == "\n-- only a comment\n"


def test_a_rendered_file_without_sql_has_an_empty_up_section() -> None:
    # (mg create writes a comment there instead: test_create_writes_template_with_new_ulid)
    problems = problems_of(render_migration("Add users", "01ABC"))
    assert len(problems) == 1
    assert problems[0].startswith("01ABC_add_users.sql:4: empty up section")


def test_second_up_marker_names_its_line() -> None:
    problems = problems_of("-- migrate: up\nSELECT 1;\n-- migrate: up\nSELECT 2;\n")
    assert problems == [
        "01ABC_add_users.sql:3: second `-- migrate: up` marker (the first is on line 1)"
    ]


def test_second_down_marker_names_its_line() -> None:
    text = "-- migrate: up\nSELECT 1;\n-- migrate: down\nSELECT 2;\n-- migrate: down\n"
    problems = problems_of(text)
    assert problems == [
        "01ABC_add_users.sql:5: second `-- migrate: down` marker (the first is on line 3)"
    ]


def test_down_before_up_is_refused() -> None:
    problems = problems_of("-- migrate: down\nDROP TABLE t;\n-- migrate: up\nCREATE TABLE t();\n")
    assert any(p.startswith("01ABC_add_users.sql:1: `-- migrate: down` before") for p in problems)


def test_header_id_must_match_file_name() -> None:
    problems = problems_of("-- migration: x\n-- id: 01ABD\n-- migrate: up\nSELECT 1;\n")
    assert problems == [
        "01ABC_add_users.sql:2: header id '01ABD' does not match the file name's id '01ABC'"
    ]


def test_header_id_is_case_sensitive() -> None:
    problems = problems_of("-- id: 01abc\n-- migrate: up\nSELECT 1;\n")
    assert problems[0].startswith("01ABC_add_users.sql:1: header id")


def test_unknown_directive_is_refused() -> None:
    problems = problems_of("-- migrate: up\nSELECT 1;\n-- migrate: sideways\n")
    assert len(problems) == 1
    assert problems[0].startswith("01ABC_add_users.sql:3: unknown directive `-- migrate: sideways`")


def test_every_problem_of_a_file_is_reported_in_line_order() -> None:
    text = "-- id: 02\nSELECT 0;\n-- migrate: up\n-- migrate: up\n-- migrate: bogus\n"
    problems = problems_of(text, "01_x.sql")
    prefixes = [
        "01_x.sql:1: header id",
        "01_x.sql:2: SQL before",
        "01_x.sql:3: empty up section",
        "01_x.sql:4: second `-- migrate: up`",
        "01_x.sql:5: unknown directive",
    ]
    assert len(problems) == len(prefixes)
    for problem, prefix in zip(problems, prefixes, strict=True):
        assert problem.startswith(prefix)


def test_bad_file_name_is_a_problem_of_that_file() -> None:
    problems = problems_of("-- migrate: up\nSELECT 1;\n", "x.sql")
    assert problems[0].startswith("x.sql:1: file name must be <id>_<name>.sql")


def test_invalid_utf8_names_file_and_line() -> None:
    with pytest.raises(MigrationFileError) as info:
        parse_migration(Path("01_x.sql"), b"-- migrate: up\nSELECT '\xff';\n")
    assert str(info.value).startswith("01_x.sql:2: not valid UTF-8")


@pytest.mark.parametrize("length", [1, 10, 26])
def test_ids_of_1_to_26_characters_are_accepted(length: int) -> None:
    file_id = ("0123456789ABCDEFGHJKMNPQRSTVWXYZ" * 2)[:length]
    match = FILENAME_RE.fullmatch(f"{file_id}_name.sql")
    assert match is not None and match.group("id") == file_id
    m = parse_migration(Path(f"{file_id}_name.sql"), b"-- migrate: up\nSELECT 1;\n")
    assert m.id == file_id


def test_27_character_id_is_refused() -> None:
    filename = "A" * 27 + "_name.sql"
    assert FILENAME_RE.fullmatch(filename) is None
    problems = problems_of("-- migrate: up\nSELECT 1;\n", filename)
    assert problems[0].startswith(f"{filename}:1: file name must be")


@pytest.mark.parametrize(
    ("filename", "file_id", "name"),
    [
        ("01J9_add-Users_Table.sql", "01J9", "add-Users_Table"),
        ("20200101_init.sql", "20200101", "init"),
        ("1_a_b.sql", "1", "a_b"),
    ],
)
def test_old_file_names_are_accepted(filename: str, file_id: str, name: str) -> None:
    m = parse_migration(Path(filename), b"-- migrate: up\nSELECT 1;\n")
    assert (m.id, m.name) == (file_id, name)


@pytest.mark.parametrize("filename", ["01.sql", "01_.sql", "_x.sql", "01-x.sql", "0é_x.sql"])
def test_malformed_file_names_are_refused(filename: str) -> None:
    assert FILENAME_RE.fullmatch(filename) is None


def test_bom_crlf_and_cr_give_the_lf_checksum() -> None:
    lf = GOOD.encode("utf-8")
    variants = [
        b"\xef\xbb\xbf" + lf,
        lf.replace(b"\n", b"\r\n"),
        lf.replace(b"\n", b"\r"),
        b"\xef\xbb\xbf" + lf.replace(b"\n", b"\r\n"),
    ]
    expected = parse_migration(Path("01ABC_add_users.sql"), lf)
    for raw in variants:
        m = parse_migration(Path("01ABC_add_users.sql"), raw)
        assert m.checksum == expected.checksum
        assert m.up_sql == expected.up_sql
        assert m.up_line == expected.up_line
        assert normalize_text(raw) == GOOD


def test_lf_checksum_equals_sha256_of_raw_bytes() -> None:
    raw = "-- migrate: up\nINSERT INTO t VALUES ('é');\n".encode()
    assert checksum(normalize_text(raw)) == hashlib.sha256(raw).hexdigest()


def test_content_change_changes_checksum() -> None:
    assert checksum(GOOD) != checksum(GOOD.replace("users", "people"))


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_discover_lists_sql_files_sorted_and_ignores_others(tmp_path: Path) -> None:
    write(tmp_path, "02_b.sql", "")
    write(tmp_path, "01_a.sql", "")
    write(tmp_path, "README.md", "")
    write(tmp_path, ".03_hidden.sql", "")
    (tmp_path / "04_dir.sql").mkdir()
    assert [p.name for p in discover(tmp_path)] == ["01_a.sql", "02_b.sql"]


def test_discover_missing_directory_is_empty(tmp_path: Path) -> None:
    assert discover(tmp_path / "nope") == []


def load_directory(directory: Path) -> list[Any]:
    """The directory as the engine loads it, through the builtin ``files`` plugin."""
    from migretti_core.planning import load_migrations
    from migretti_core.testing import make_config, make_hooks, make_session

    hooks = make_hooks(builtins=["files"])
    return load_migrations(make_session(hooks, make_config(directory, migrations_dir=directory)))


def directory_problems(directory: Path) -> list[str]:
    with pytest.raises(MigrationFileError) as info:
        load_directory(directory)
    return [p.replace(f"{directory}/", "") for p in info.value.problems]


def test_load_directory_sorts_by_id(tmp_path: Path) -> None:
    body = "-- migrate: up\nSELECT 1;\n"
    write(tmp_path, "01B_b.sql", body)
    write(tmp_path, "01_a.sql", body)
    write(tmp_path, "01A_c.sql", body)
    assert [m.id for m in load_directory(tmp_path)] == ["01", "01A", "01B"]


def test_load_directory_reports_all_problems_together(tmp_path: Path) -> None:
    good = "-- migrate: up\nSELECT 1;\n"
    write(tmp_path, "01_a.sql", good)
    write(tmp_path, "01_b.sql", good)
    write(tmp_path, "02_c.sql", "SELECT 1;\n")
    write(tmp_path, "03_d.sql", "-- migrate: up\n\n")
    write(tmp_path, "x.sql", good)
    problems = directory_problems(tmp_path)
    assert len(problems) == 4
    assert any(p.startswith("01_b.sql:1: duplicate id 01") and "01_a.sql" in p for p in problems)
    assert "02_c.sql:1: no `-- migrate: up` marker" in problems
    assert any(p.startswith("03_d.sql:1: empty up section") for p in problems)
    assert any(p.startswith("x.sql:1: file name must be <id>_<name>.sql") for p in problems)


def test_duplicate_id_is_found_even_when_a_file_is_broken(tmp_path: Path) -> None:
    write(tmp_path, "05_a.sql", "-- migrate: up\nSELECT 1;\n")
    write(tmp_path, "05_b.sql", "nothing\n")
    write(tmp_path, "05_c.sql", "-- migrate: up\nSELECT 2;\n")
    problems = directory_problems(tmp_path)
    assert any("duplicate id 05" in p for p in problems)
    assert any(p.startswith("05_b.sql:1: no `-- migrate: up`") for p in problems)


def test_load_missing_directory_is_empty(tmp_path: Path) -> None:
    assert load_directory(tmp_path / "nope") == []


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Add Users Table", "add_users_table"),
        ("  add--users!!table  ", "add_users_table"),
        ("v2 Index", "v2_index"),
        ("Café au lait", "cafe_au_lait"),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug


@pytest.mark.parametrize("name", ["###", "", "   ", "ßß", "日本"])
def test_slugify_refuses_empty_result(name: str) -> None:
    with pytest.raises(UsageError, match="empty file name"):
        slugify(name)


def test_render_migration_is_exact() -> None:
    assert render_migration("Add Users Table", "01J0") == (
        "-- migration: Add Users Table\n-- id: 01J0\n\n-- migrate: up\n\n-- migrate: down\n"
    )


def test_create_writes_template_with_new_ulid(tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    path = create_migration_file(directory, "Add Users Table")
    assert path.parent == directory
    match = FILENAME_RE.fullmatch(path.name)
    assert match is not None
    assert len(match.group("id")) == 26
    assert match.group("name") == "add_users_table"
    # The SPEC's template, with a comment in the up section: the file parses as written.
    assert path.read_text(encoding="utf-8") == (
        f"-- migration: Add Users Table\n-- id: {match.group('id')}\n\n-- migrate: up\n"
        "-- Write the migration's SQL here.\n\n-- migrate: down\n"
    )
    up_sql = parse_migration(path, path.read_bytes()).up_sql
    assert up_sql == "-- Write the migration's SQL here.\n\n"


def test_create_then_fill_in_parses(tmp_path: Path) -> None:
    path = create_migration_file(tmp_path, "Add users", id="01ABC")
    text = path.read_text(encoding="utf-8").replace(
        "-- migrate: up\n", "-- migrate: up\nCREATE TABLE users ();\n"
    )
    m = parse_migration(path, text.encode())
    assert (m.id, m.name, m.title) == ("01ABC", "add_users", "Add users")


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = create_migration_file(tmp_path, "first", id="01ABC")
    path.write_text("-- migrate: up\nSELECT 1;\n")
    with pytest.raises(UsageError):
        create_migration_file(tmp_path, "first", id="01ABC")
    assert path.read_text() == "-- migrate: up\nSELECT 1;\n"


def test_create_refuses_an_id_already_in_use(tmp_path: Path) -> None:
    create_migration_file(tmp_path, "first", id="01ABC")
    with pytest.raises(UsageError, match="01ABC"):
        create_migration_file(tmp_path, "second", id="01ABC")
    assert len(discover(tmp_path)) == 1


def test_create_refuses_bad_id(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        create_migration_file(tmp_path, "x", id="A" * 27)
    assert discover(tmp_path) == []


def test_create_keeps_a_multiline_title_in_the_header(tmp_path: Path) -> None:
    path = create_migration_file(tmp_path, "a\n-- migrate: up\nDROP TABLE t;", id="01")
    assert path.read_text().splitlines()[:2] == [
        "-- migration: a -- migrate: up DROP TABLE t;",
        "-- id: 01",
    ]


def test_create_never_overwrites_a_file_that_appears_concurrently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import migretti_plugins.files.parse as parse

    # Another `mg create` wins the race after the id check: the write must still not clobber it.
    path = write(tmp_path, "01ABC_first.sql", "-- migrate: up\nSELECT 1;\n")
    monkeypatch.setattr(parse, "discover", lambda directory: [])
    with pytest.raises(UsageError, match="not overwriting"):
        create_migration_file(tmp_path, "first", id="01ABC")
    assert path.read_text() == "-- migrate: up\nSELECT 1;\n"


@pytest.mark.parametrize("size", [0, 1, 120, (1 << 16) - 1, 1 << 16, (1 << 20) + 3])
def test_checksums_are_sha256_whichever_implementation_takes_them(size: int) -> None:
    # small inputs go to the interpreter's own SHA-256, large ones to OpenSSL's
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
    text = data.decode("latin-1")
    assert checksum(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()
