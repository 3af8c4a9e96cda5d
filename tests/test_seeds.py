"""`mg seed` and `mg seed create` against a real server, through the real `mg` command."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migretti_core.testing import (
    MG_COMMAND,
    Project,
    assert_clean_error,
    mg_env,
    run_mg,
    write_text,
)

LOG_TABLE = (
    "CREATE TABLE IF NOT EXISTS seed_log (seed text NOT NULL, at timestamptz DEFAULT now());"
)


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Path:
    write_text(
        tmp_path / "mg.yaml",
        f"""
        database:
          url: {json.dumps(database_url)}
        envs:
          prod:
            protected: true
        """,
    )
    (tmp_path / "seeds").mkdir()
    return tmp_path


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def runs(url: str) -> dict[str, int]:
    """How many times each seed ran, counted by the rows the seeds themselves insert."""
    return dict(rows(url, "SELECT seed, count(*)::int FROM seed_log GROUP BY seed"))


def table_exists(url: str, name: str) -> bool:
    return bool(rows(url, f"SELECT to_regclass('{name}') IS NOT NULL")[0][0])


def logging_seed(project: Path, filename: str, extra: str = "") -> Path:
    """A seed that records each of its runs in seed_log."""
    tag = filename.removesuffix(".sql")
    return write_text(
        project / "seeds" / filename,
        f"{LOG_TABLE}\nINSERT INTO seed_log (seed) VALUES ('{tag}');\n{extra}",
    )


def result_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.strip()]


def test_seed_create_writes_a_template_that_is_valid_sql(
    project: Path, database_url: str, psql_bin: Path
) -> None:
    result = run_mg(["seed", "create", "Demo Users!"], project)
    assert result.returncode == 0, result.stderr
    shown = result.stdout.strip()
    match = re.fullmatch(r"seeds/([0-9A-Z]{26})_demo_users\.sql", shown)
    assert match, shown
    path = project / shown
    text = path.read_text(encoding="utf-8")
    assert f"-- id: {match.group(1)}" in text
    assert "-- seed: Demo Users!" in text
    checked = subprocess.run(
        [str(psql_bin), "-X", "-v", "ON_ERROR_STOP=1", "-f", str(path), database_url],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    ran = run_mg(["seed"], project)
    assert ran.returncode == 0, ran.stderr
    assert result_lines(ran.stdout) == [f"ran {path.name} ({_ms(ran.stdout)} ms)"]


def _ms(stdout: str) -> str:
    found = re.search(r"\((\d+) ms\)", stdout)
    assert found, stdout
    return found.group(1)


def test_seed_create_refuses_a_name_without_letters_or_digits(project: Path) -> None:
    result = run_mg(["seed", "create", "!!!"], project)
    assert_clean_error(result, "empty file name")
    assert "seed name '!!!'" in result.stderr  # a seed, not a migration
    assert list((project / "seeds").iterdir()) == []


def test_a_file_or_dangling_link_in_place_of_the_seeds_directory_is_named(project: Path) -> None:
    seeds = project / "seeds"
    seeds.rmdir()
    seeds.write_text("not a directory\n")
    for args in (["seed"], ["seed", "create", "users"]):
        done = run_mg(args, project)
        assert_clean_error(done, "mg: error: the seeds directory seeds is not a directory")
        assert "File exists" not in done.stderr
    seeds.unlink()
    seeds.symlink_to(project / "gone")
    for args in (["seed"], ["seed", "create", "users"]):
        done = run_mg(args, project)  # not "no seeds", not "File exists"
        assert_clean_error(done, "mg: error: the seeds directory seeds is a dangling symlink")
    assert not (project / "gone").exists()


def test_a_misspelt_seed_create_is_pointed_at_it(project: Path) -> None:
    done = run_mg(["seed", "craete", "users"], project)
    stderr = assert_clean_error(done, "no seed named 'craete' in seeds/")
    assert "hint: did you mean `mg seed create`?" in stderr
    done = run_mg(["seed", "users"], project)  # a seed name, nothing like create
    assert "did you mean" not in assert_clean_error(done, "no seed named 'users' in seeds/")
    assert list((project / "seeds").iterdir()) == []


def test_runs_all_then_skips_all_then_only_the_edited_one(project: Path, database_url: str) -> None:
    for name in ("01_a.sql", "02_b.sql", "03_c.sql"):
        logging_seed(project, name)

    first = run_mg(["seed"], project)
    assert first.returncode == 0, first.stderr
    lines = result_lines(first.stdout)
    assert [line.split(" (")[0] for line in lines] == [
        "ran 01_a.sql",
        "ran 02_b.sql",
        "ran 03_c.sql",
    ]
    assert runs(database_url) == {"01_a": 1, "02_b": 1, "03_c": 1}
    assert "3 ran, 0 skipped" in first.stderr

    second = run_mg(["seed"], project)
    assert second.returncode == 0, second.stderr
    assert result_lines(second.stdout) == [
        f"skipped {n} (unchanged since it ran)" for n in ("01_a.sql", "02_b.sql", "03_c.sql")
    ]
    assert runs(database_url) == {"01_a": 1, "02_b": 1, "03_c": 1}

    logging_seed(project, "02_b.sql", extra="-- edited\n")
    third = run_mg(["seed"], project)
    assert third.returncode == 0, third.stderr
    assert [line.split(" (")[0] for line in result_lines(third.stdout)] == [
        "skipped 01_a.sql",
        "ran 02_b.sql",
        "skipped 03_c.sql",
    ]
    assert runs(database_url) == {"01_a": 1, "02_b": 2, "03_c": 1}
    recorded = dict(rows(database_url, "SELECT name, checksum FROM _migrations_seeds"))
    text = (project / "seeds" / "02_b.sql").read_text(encoding="utf-8")
    import hashlib

    assert recorded["02_b.sql"] == hashlib.sha256(text.encode()).hexdigest()


def test_all_runs_every_seed_again(project: Path, database_url: str) -> None:
    for name in ("01_a.sql", "02_b.sql"):
        logging_seed(project, name)
    assert run_mg(["seed"], project).returncode == 0
    again = run_mg(["seed", "--all"], project)
    assert again.returncode == 0, again.stderr
    assert [line.split(" (")[0] for line in result_lines(again.stdout)] == [
        "ran 01_a.sql",
        "ran 02_b.sql",
    ]
    assert runs(database_url) == {"01_a": 2, "02_b": 2}


def test_named_seeds_run_alone_by_file_name_id_or_slug(project: Path, database_url: str) -> None:
    logging_seed(project, "01HZZZZZZZZZZZZZZZZZZZZZZA_users.sql")
    logging_seed(project, "01HZZZZZZZZZZZZZZZZZZZZZZB_orders.sql")
    logging_seed(project, "01HZZZZZZZZZZZZZZZZZZZZZZC_items.sql")

    by_slug = run_mg(["seed", "orders"], project)
    assert by_slug.returncode == 0, by_slug.stderr
    assert runs(database_url) == {"01HZZZZZZZZZZZZZZZZZZZZZZB_orders": 1}

    by_id_and_file = run_mg(
        ["seed", "01HZZZZZZZZZZZZZZZZZZZZZZC", "seeds/01HZZZZZZZZZZZZZZZZZZZZZZA_users.sql"],
        project,
    )
    assert by_id_and_file.returncode == 0, by_id_and_file.stderr
    assert [line.split(" (")[0] for line in result_lines(by_id_and_file.stdout)] == [
        "ran 01HZZZZZZZZZZZZZZZZZZZZZZA_users.sql",
        "ran 01HZZZZZZZZZZZZZZZZZZZZZZC_items.sql",
    ]

    named_again = run_mg(["seed", "orders"], project)
    assert result_lines(named_again.stdout)[0].startswith("skipped")
    forced = run_mg(["seed", "orders", "--all"], project)
    assert forced.returncode == 0, forced.stderr
    assert runs(database_url)["01HZZZZZZZZZZZZZZZZZZZZZZB_orders"] == 2


def test_an_unknown_name_is_refused_before_anything_runs(project: Path, database_url: str) -> None:
    logging_seed(project, "01_a.sql")
    result = run_mg(["seed", "01_a", "nope"], project)
    assert_clean_error(result, "no seed named 'nope'", code=2, one_line=False)
    assert not table_exists(database_url, "seed_log")
    assert not table_exists(database_url, "_migrations_seeds")


def test_a_path_outside_the_seeds_directory_is_refused_not_mapped_to_a_seed(
    project: Path, database_url: str
) -> None:
    logging_seed(project, "x.sql")
    write_text(project / "other" / "x.sql", "CREATE TABLE from_other (id int);\n")
    write_text(project / "seeds" / "sub" / "x.sql", "CREATE TABLE from_sub (id int);\n")

    for given in ("other/x.sql", str(project / "other" / "x.sql"), "seeds/sub/x.sql"):
        result = run_mg(["seed", given], project)
        assert_clean_error(result, f"{given} is not a seed", "directly in seeds/")
        assert not table_exists(database_url, "_migrations_seeds")
    unknown = run_mg(["seed", "nope"], project)
    assert_clean_error(unknown, "no seed named 'nope' in seeds/")
    assert not table_exists(database_url, "seed_log")

    # a path into seeds_dir selects that seed: relative to the working directory, and through
    # a symbolic link to the project too
    (project.parent / f"{project.name}-link").symlink_to(project)
    config = f"{project.name}-link/mg.yaml"
    inside = run_mg(["--config", config, "seed", f"{project.name}/seeds/./x.sql"], project.parent)
    assert inside.returncode == 0, inside.stderr
    assert runs(database_url) == {"x": 1}
    assert not table_exists(database_url, "from_other")


def test_a_failing_seed_rolls_back_alone_and_stops_the_run(
    project: Path, database_url: str
) -> None:
    logging_seed(project, "01_a.sql")
    write_text(
        project / "seeds" / "02_bad.sql",
        """
        INSERT INTO seed_log (seed) VALUES ('02_bad');

        INSERT INTO missing_table VALUES (1);
        """,
    )
    logging_seed(project, "03_c.sql")

    result = run_mg(["seed"], project)
    stderr = assert_clean_error(
        result, "seeds/02_bad.sql:3:", "missing_table", code=1, one_line=False
    )
    assert "42P01" in stderr
    assert [line.split(" (")[0] for line in result_lines(result.stdout)] == ["ran 01_a.sql"]
    assert runs(database_url) == {"01_a": 1}
    assert [r[0] for r in rows(database_url, "SELECT name FROM _migrations_seeds")] == ["01_a.sql"]

    write_text(project / "seeds" / "02_bad.sql", "INSERT INTO seed_log (seed) VALUES ('02_bad');\n")
    fixed = run_mg(["seed"], project)
    assert fixed.returncode == 0, fixed.stderr
    assert [line.split(" (")[0] for line in result_lines(fixed.stdout)] == [
        "skipped 01_a.sql",
        "ran 02_bad.sql",
        "ran 03_c.sql",
    ]
    assert runs(database_url) == {"01_a": 1, "02_bad": 1, "03_c": 1}


def test_a_statement_refused_in_a_transaction_block_fails_its_seed_alone(
    project: Path, database_url: str
) -> None:
    """There is no no-transaction seed: VACUUM fails the seed it is in, as any error does."""
    logging_seed(project, "01_a.sql")
    logging_seed(project, "02_vacuum.sql", "VACUUM seed_log;\n")
    logging_seed(project, "03_c.sql")

    result = run_mg(["seed"], project)

    stderr = assert_clean_error(result, "seeds/02_vacuum.sql:3:", "VACUUM", code=1, one_line=False)
    assert "25001" in stderr and "rolled back" in stderr
    assert runs(database_url) == {"01_a": 1}


def test_concurrent_runs_run_each_seed_once(project: Path, database_url: str) -> None:
    logging_seed(project, "01_slow.sql", extra="SELECT pg_sleep(1);\n")
    logging_seed(project, "02_b.sql")
    logging_seed(project, "03_c.sql")
    processes = [
        subprocess.Popen(
            [*MG_COMMAND, "seed"],
            cwd=project,
            env=mg_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    assert runs(database_url) == {"01_slow": 1, "02_b": 1, "03_c": 1}
    ran = [line for out, _ in outputs for line in result_lines(out) if line.startswith("ran ")]
    assert len(ran) == 3


def test_a_seed_that_releases_the_lock_stops_the_run_before_the_next_seed(
    project: Path, database_url: str
) -> None:
    logging_seed(project, "01_unlock.sql", extra="SELECT pg_advisory_unlock_all();\n")
    logging_seed(project, "02_b.sql")
    logging_seed(project, "03_c.sql")
    done = run_mg(["seed"], project)
    assert done.returncode == 1, done.stderr
    assert "lock" in done.stderr and "02_b.sql" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert runs(database_url) == {"01_unlock": 1}

    # four runs at once, each losing the lock after its first seed: the seeds after it ran
    # once (the first may run twice: a run can take the lock in the moment between the
    # release and the commit of the seed that released it)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM seed_log")
        conn.execute("DELETE FROM _migrations_seeds")
    processes = [
        subprocess.Popen(
            [*MG_COMMAND, "seed"],
            cwd=project,
            env=mg_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode in (0, 1), stderr
        assert "Traceback" not in stderr
    counted = runs(database_url)
    assert counted["02_b"] == 1 and counted["03_c"] == 1, counted
    assert counted["01_unlock"] >= 1, counted


def test_dry_run_tries_the_seeds_and_changes_nothing(project: Path, database_url: str) -> None:
    logging_seed(project, "01_a.sql")
    result = run_mg(["seed", "--dry-run"], project)
    assert result.returncode == 0, result.stderr
    assert result_lines(result.stdout)[0].startswith("would run 01_a.sql: ok")
    assert "nothing was changed" in result.stderr
    assert not table_exists(database_url, "seed_log")
    assert not table_exists(database_url, "_migrations_seeds")

    write_text(project / "seeds" / "02_bad.sql", "SELECT 1;\nSELECT nope;\n")
    failing = run_mg(["seed", "--dry-run"], project)
    assert failing.returncode == 1
    assert "seeds/02_bad.sql:2:" in failing.stderr
    assert not table_exists(database_url, "_migrations_seeds")


def test_protected_profile_asks_first(project: Path, database_url: str) -> None:
    logging_seed(project, "01_a.sql")
    refused = run_mg(["--env", "prod", "seed"], project, input="")
    assert_clean_error(refused, "protected", code=5, one_line=False)
    assert not table_exists(database_url, "_migrations_seeds")
    refused_dry = run_mg(["seed", "--dry-run", "--env", "prod"], project, input="")
    assert refused_dry.returncode == 5, refused_dry.stderr

    confirmed = run_mg(["seed", "--env", "prod", "--yes"], project)
    assert confirmed.returncode == 0, confirmed.stderr
    assert runs(database_url) == {"01_a": 1}


def test_no_seeds_is_not_an_error(project: Path, database_url: str) -> None:
    result = run_mg(["seed"], project)
    assert result.returncode == 0, result.stderr
    assert "no seeds" in result.stderr
    assert not table_exists(database_url, "_migrations_seeds")


def test_a_seeds_dir_named_in_mg_yaml_that_does_not_exist_is_an_error(
    project: Path, database_url: str
) -> None:
    (project / "seeds").rmdir()
    with open(project / "mg.yaml", "a") as config:
        config.write("seeds_dir: db/seedz\n")
    for args in (["seed"], ["seed", "--dry-run"]):
        done = run_mg(args, project)
        assert done.returncode == 2, done.stderr
        assert "db/seedz" in done.stderr and "does not exist" in done.stderr, done.stderr
        assert f"{project}" not in done.stderr, done.stderr  # relative, as elsewhere
        assert "no seeds" not in done.stderr
    # the default directory, which mg init names in mg.yaml, may be missing until a seed
    # is created
    text = (project / "mg.yaml").read_text().replace("db/seedz", "seeds")
    (project / "mg.yaml").write_text(text)
    done = run_mg(["seed"], project)
    assert done.returncode == 0 and "no seeds" in done.stderr, done.stderr
    assert not table_exists(database_url, "_migrations_seeds")


@pytest.mark.parametrize("dry_run", [False, True])
def test_transaction_control_in_a_seed_is_refused_before_any_seed_runs(
    tmp_path: Path, database_url: str, dry_run: bool
) -> None:
    # A COMMIT would commit the seed apart from its row (in a dry run: the seeds before it),
    # and nothing after the fact can take that back.
    project = Project(tmp_path / "proj", database_url)
    try:
        write_text(project.root / "seeds" / "01_table.sql", "CREATE TABLE first (i int);\n")
        write_text(
            project.root / "seeds" / "02_commit.sql",
            "CREATE TABLE second (i int);\nINSERT INTO second VALUES (1);\nCOMMIT;\n",
        )
        write_text(project.root / "seeds" / "03_begin.sql", "BEGIN;\nSELECT 1;\nEND;\n")
        result = project.mg("seed", *(["--dry-run"] if dry_run else []))
        stderr = assert_clean_error(
            result, "seeds/02_commit.sql:3: COMMIT", "seeds/03_begin.sql:1: BEGIN", one_line=False
        )
        assert "seeds/03_begin.sql:3: END" in stderr
        assert "rolled back" not in stderr
        assert project.all_tables() == set()
    finally:
        project.close()


def test_a_seed_that_empties_search_path_is_still_recorded(
    tmp_path: Path, database_url: str
) -> None:
    # pg_dump --data-only output starts by emptying search_path for the session
    project = Project(tmp_path / "proj", database_url)
    try:
        project.sql("CREATE TABLE public.items (id int)")
        write_text(
            project.root / "seeds" / "01_dump.sql",
            """
            SELECT pg_catalog.set_config('search_path', '', false);
            INSERT INTO public.items VALUES (1);
            """,
        )
        write_text(project.root / "seeds" / "02_more.sql", "INSERT INTO public.items VALUES (2);\n")

        done = project.mg("seed")
        assert done.returncode == 0, done.stderr
        again = project.mg("seed")
        assert again.returncode == 0, again.stderr
        assert "ran" not in again.stdout.replace("unchanged since it ran", "")
        assert project.sql("SELECT id FROM public.items ORDER BY id") == [(1,), (2,)]
        assert project.sql("SELECT name FROM _migrations_seeds ORDER BY name") == [
            ("01_dump.sql",),
            ("02_more.sql",),
        ]
    finally:
        project.close()


def test_a_seed_that_is_not_utf8_is_named_with_its_directory(
    project: Path, database_url: str
) -> None:
    logging_seed(project, "01_first.sql")
    (project / "seeds" / "02_latin1.sql").write_bytes(b"SELECT 'caf\xe9';\n")

    result = run_mg(["seed"], project)

    assert_clean_error(result, "seeds/02_latin1.sql:1: not valid UTF-8")
    assert not table_exists(database_url, "seed_log")


def deferred_seeds(project: Path) -> None:
    """A seed whose foreign key violation is raised only when its transaction commits."""
    write_text(
        project / "seeds" / "01_schema.sql",
        """
        CREATE TABLE parent (id int PRIMARY KEY);
        CREATE TABLE child (p int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);
        """,
    )
    write_text(
        project / "seeds" / "02_orphan.sql", "-- no parent 42\nINSERT INTO child VALUES (42);\n"
    )
    logging_seed(project, "03_c.sql")


def test_a_deferred_constraint_failing_at_commit_names_the_seed(
    project: Path, database_url: str
) -> None:
    deferred_seeds(project)
    result = run_mg(["seed"], project)
    assert_clean_error(result, "seeds/02_orphan.sql:", "23503", code=1, one_line=False)
    assert [line.split(" (")[0] for line in result_lines(result.stdout)] == ["ran 01_schema.sql"]
    assert rows(database_url, "SELECT name FROM _migrations_seeds") == [("01_schema.sql",)]
    assert rows(database_url, "SELECT count(*)::int FROM child") == [(0,)]
    assert not table_exists(database_url, "seed_log")


def test_dry_run_reports_a_deferred_constraint_the_real_run_would_hit(
    project: Path, database_url: str
) -> None:
    deferred_seeds(project)
    result = run_mg(["seed", "--dry-run"], project)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "seeds/02_orphan.sql:" in result.stderr
    assert "23503" in result.stderr
    lines = [line.split(":")[0] for line in result_lines(result.stdout)]
    assert lines == ["would run 01_schema.sql"]
    assert "not executed: 03_c.sql" in result.stdout + result.stderr
    assert not table_exists(database_url, "parent")
    assert not table_exists(database_url, "_migrations_seeds")


def test_a_usage_error_points_to_mg_seed_help(project: Path) -> None:
    result = run_mg(["seed", "--bogus"], project)
    assert result.returncode == 2
    assert "Try 'mg seed --help' for help." in result.stderr
    assert "seed run" not in result.stderr  # the hidden subcommand is not the user's


def test_a_lost_connection_names_the_seed_that_was_running(
    project: Path, database_url: str
) -> None:
    logging_seed(project, "01_a.sql")
    write_text(
        project / "seeds" / "02_kill.sql", "SELECT pg_terminate_backend(pg_backend_pid());\n"
    )
    logging_seed(project, "03_c.sql")
    result = run_mg(["seed"], project)
    assert_clean_error(result, "seeds/02_kill.sql", "connection was lost", code=1, one_line=False)
    assert runs(database_url) == {"01_a": 1}
    assert rows(database_url, "SELECT name FROM _migrations_seeds") == [("01_a.sql",)]


def test_a_seed_whose_name_has_a_line_break_is_selected_by_its_name(
    project: Path, database_url: str
) -> None:
    write_text(project / "seeds" / "01_two\nlines.sql", "SELECT 1;\n")
    write_text(project / "seeds" / "02_other.sql", "SELECT 2;\n")
    done = run_mg(["seed", "two\nlines"], project)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "two\\nlines" in output and "two\nlines" not in output, output
    assert "other" not in output
    applied = rows(database_url, "SELECT name FROM _migrations_seeds ORDER BY name")
    assert applied == [("01_two\nlines.sql",)]
    # the id still selects it, and an unknown name with a line break is shown escaped
    assert run_mg(["seed", "01"], project).returncode == 0
    refused = run_mg(["seed", "no\nsuch"], project)
    assert refused.returncode == 2
    assert "no seed named 'no\\nsuch'" in refused.stderr and "01_two\\nlines.sql" in refused.stderr
