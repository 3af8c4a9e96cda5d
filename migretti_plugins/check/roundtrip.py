"""``mg check``: every migration applied, undone and applied again on a scratch database.

For each migration in order: snapshot S0, up, S1, down, S2, up, S3. S2 must equal S0 (the
down section undoes the up section) and S3 must equal S1 (up can run again after down).

For a transactional migration the down/up round trip runs inside a transaction that is
rolled back, so whatever it does, the scratch database is back at S1 (the state the next
migration expects, as on a real server) and S0 of the next migration is this one's S1: three
snapshots per migration. A no-transaction migration cannot run inside a transaction, so its
round trip is committed step by step; when that leaves the scratch database other than its
up made it, the later migrations are not checked (they would start from a schema production
never has).

Nothing here prints: ``run_check`` returns a ``CheckReport`` (for the CLI, for JSON, for the
Python API); progress goes through ``report`` events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from migretti_core import reporting
from migretti_core.errors import MgError
from migretti_core.types import Migration, Session
from migretti_plugins.check import diff, snapshot
from migretti_plugins.check.scratch import URL_LABEL, Scratch, scratch_database, scratch_failure

Linter = Callable[[Session, Sequence[Migration], "int | None"], list[dict[str, Any]]]


@dataclass
class MigrationCheck:
    """What the round trip found for one migration."""

    id: str
    name: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: bool = True

    @property
    def ok(self) -> bool:
        return self.checked and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "ok": self.ok,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "checked": self.checked,
        }


@dataclass
class CheckReport:
    """The outcome of ``mg check``; ``failed`` is set when a migration could not be applied."""

    migrations: list[MigrationCheck] = field(default_factory=list)
    lint: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    failed: bool = False
    database: str = ""

    @property
    def lint_errors(self) -> int:
        return sum(1 for f in self.lint if f.get("severity", "error") == "error")

    @property
    def ok(self) -> bool:
        return (
            not self.failed
            and all(m.ok for m in self.migrations)
            and not self.seeds
            and not self.lint_errors
        )

    @property
    def exit_code(self) -> int:
        if self.failed:
            return 1
        return 0 if self.ok else 3

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "migrations": [m.as_dict() for m in self.migrations],
            "lint": list(self.lint),
            "seeds": list(self.seeds),
            "database": self.database,
        }


def _remember_target_passfile(session: Session) -> None:
    """Mask the password libpq would read from a password file for the target: a check never
    connects to the target, so it is not learned from a connection, yet a migration's error
    on the scratch database may quote it (``SELECT 'pw'::int``)."""
    import os

    from migretti_core.pgservice import passfile_passwords

    try:
        params = session.hooks.connection_params(session)
    except MgError:
        return  # an embedded target, or none configured: no password file is read for it
    if not params or params.get("password") or os.environ.get("PGPASSWORD"):
        return  # known already (configuration, PGPASSWORD) and masked
    for password in passfile_passwords(params, os.environ):
        session.hooks.secrets.add(password)


def run_check(
    session: Session,
    *,
    database_url: str | None = None,
    seeds: bool = False,
    require_down: bool = False,
    linter: Linter | None = None,
    ignore: Sequence[str] = (),
    url_label: str = URL_LABEL,
) -> CheckReport:
    """Check every migration of the project on a scratch database; never touches the target.
    ``url_label`` is what errors call ``database_url``."""
    from migretti_core import planning

    planning.require_project(session, "check")
    _remember_target_passfile(session)
    migrations = planning.load_migrations(session)
    planning.validate(session, migrations)  # the pre-flight checks of apply, exit 2 as there
    result = CheckReport()
    with scratch_database(session, database_url, url_label) as scratch:
        result.database = scratch.where
        reporting.report(
            session,
            "check.started",
            "info",
            f"checking {len(migrations)} migration{'s' if len(migrations) != 1 else ''} "
            f"on {scratch.where}",
            count=len(migrations),
        )
        _round_trips(scratch, migrations, result, require_down, ignore)
        if seeds and all(m.checked for m in result.migrations):
            result.seeds = _run_seeds(scratch)
        version = scratch.server_version
    if linter is not None:
        result.lint = linter(session, migrations, version)
    return result


def _round_trips(
    scratch: Scratch,
    migrations: Sequence[Migration],
    result: CheckReport,
    require_down: bool,
    ignore: Sequence[str],
) -> None:
    from migretti_core import running

    s = scratch.session
    hooks = s.hooks
    with running.connected(s) as conn:
        hooks.history_prepare(s, conn)
        before = snapshot.take(s, conn)
        for index, migration in enumerate(migrations):
            item = MigrationCheck(migration.id, migration.name)
            result.migrations.append(item)
            reporting.report(
                s,
                "check.migration",
                "debug",
                f"[{index + 1}/{len(migrations)}] {migration.id} {migration.name}",
                migration_id=migration.id,
                migration_name=migration.name,
            )
            try:
                running.run_migration(s, conn, migration, "up")
            except MgError as exc:
                item.problems.append(
                    "up fails on the scratch database: "
                    + scratch_failure(migration.id, exc.message)
                )
                result.failed = True
                _not_checked(
                    result, migrations[index + 1 :], f"{migration.id} failed to apply before it"
                )
                return
            after = snapshot.take(s, conn)
            if not migration.has_down:
                message = "irreversible: no down section, it cannot be rolled back"
                (item.problems if require_down else item.warnings).append(message)
                before = after
                continue
            if migration.transactional:
                with hooks.transaction(s, conn, rollback=True):
                    _down_and_up(s, conn, migration, before, after, item, ignore)
            else:
                _down_and_up(s, conn, migration, before, after, item, ignore)
                now = snapshot.take(s, conn)
                if diff.compare(after, now, ignore):
                    # Committed step by step, the round trip cannot be rolled back: the
                    # later migrations would start from a schema production never has, and
                    # fail (or pass) for this one's reasons.
                    _not_checked(
                        result,
                        migrations[index + 1 :],
                        f"{migration.id} (no-transaction) was left part way by its round trip, "
                        "so the scratch database is not what its up makes",
                    )
                    return
                after = now
            before = after


def _not_checked(result: CheckReport, later: Sequence[Migration], reason: str) -> None:
    result.migrations.extend(
        MigrationCheck(m.id, m.name, [f"not checked: {reason}"], checked=False) for m in later
    )


def _down_and_up(
    s: Session,
    conn: Any,
    migration: Migration,
    before: snapshot.Snapshot,
    after: snapshot.Snapshot,
    item: MigrationCheck,
    ignore: Sequence[str],
) -> None:
    from migretti_core import running

    ident = migration.id
    try:
        running.run_migration(s, conn, migration, "down")
    except MgError as exc:
        item.problems.append(f"down of {ident} fails: {scratch_failure(ident, exc.message)}")
        return
    undone = snapshot.take(s, conn)
    found = diff.compare(before, undone, ignore)
    if found:
        objects = "; ".join(d.describe(diff.DOWN) for d in found)
        item.problems.append(f"down of {ident} does not restore the schema: {objects}")
    try:
        running.run_migration(s, conn, migration, "up")
    except MgError as exc:
        item.problems.append(
            f"up of {ident} is not repeatable after down: {scratch_failure(ident, exc.message)}"
        )
        return
    redone = snapshot.take(s, conn)
    found = diff.compare(after, redone, ignore)
    if found:
        objects = "; ".join(d.describe(diff.UP_AGAIN) for d in found)
        item.problems.append(f"up of {ident} is not repeatable after down: {objects}")


def _run_seeds(scratch: Scratch) -> list[str]:
    """Run every seed on the scratch database; the problems found (empty when all ran)."""
    import contextlib
    import io
    import sys

    from migretti_core.errors import PluginError

    session = scratch.session
    try:
        # The seeds plugin prints what ran as results; here they are progress (with
        # --json-log its events are JSON lines on stderr already, so the text is dropped).
        progress: Any = io.StringIO() if session.options.json_log else sys.stderr
        with contextlib.redirect_stdout(progress):
            code = session.hooks.seed(session, force=True)
    except MgError as exc:
        return [f"seed fails: {exc.message}"]
    if code is None:
        raise PluginError("seeds are not available: the seeds plugin is not loaded")
    return []
