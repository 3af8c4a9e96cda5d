"""``mg drift``: the target's schema against the one its applied migrations produce.

The applied migrations (in the order they were applied, from their current files) are run
on a scratch database; both schemas are snapshotted and compared object by object. The
target is only read, on a connection set to ``default_transaction_read_only``: drift never
changes it, takes no lock and creates no table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from migretti_core import reporting
from migretti_core.errors import MgError, MigrationFailed, StateError
from migretti_core.messages import printable
from migretti_core.types import Session
from migretti_plugins.check import diff, snapshot
from migretti_plugins.check.scratch import URL_LABEL, scratch_database, scratch_failure


@dataclass
class DriftReport:
    """The differences found; empty means the target is what its migrations say."""

    differences: list[diff.Difference] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    applied: int = 0
    database: str = ""

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def messages(self) -> list[str]:
        return [d.describe(diff.DRIFT) for d in self.differences]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "applied": self.applied,
            "differences": [d.as_dict(diff.DRIFT) for d in self.differences],
            "warnings": list(self.warnings),
            "database": self.database,
        }


def run_drift(
    session: Session,
    *,
    database_url: str | None = None,
    ignore: Sequence[str] = (),
    url_label: str = URL_LABEL,
) -> DriftReport:
    """Compare the target with a scratch database built from its applied migrations.
    ``url_label`` is what errors call ``database_url``."""
    from migretti_core import planning, running

    hooks = session.hooks
    migrations = planning.load_migrations(session)
    result = DriftReport()
    with running.connected(session) as conn:
        hooks.query(session, conn, "SET default_transaction_read_only = on")
        state = running.read_state(session, conn, migrations)
        by_id = state.by_id
        gone = [e for e in state.applied if e.id not in by_id]
        if gone:
            raise StateError(
                "cannot rebuild the schema: applied migration file gone: "
                + ", ".join(f"{e.id} ({printable(e.name)})" for e in gone),
                hint="restore the files from version control",
            )
        for entry in state.blocking:
            result.warnings.append(
                f"{entry.id} {printable(entry.name)} is {entry.status}; it is not part of the "
                "comparison"
            )
        for migration, _ in state.modified:
            result.warnings.append(
                f"{reporting.display_path(migration.path)} changed since it was applied; "
                "its current text is used"
            )
        applied = [by_id[e.id] for e in state.applied]
        result.applied = len(applied)
        actual = snapshot.take(session, conn)
        target_version = _server_version(session, conn)
        search_path = _search_path(session, conn)
    with scratch_database(session, database_url, url_label) as scratch:
        result.database = scratch.where
        if target_version and target_version != scratch.server_version:
            result.warnings.append(
                f"the database runs PostgreSQL {target_version} and the scratch server "
                f"{scratch.server_version}: definitions may be printed differently"
            )
        s = scratch.session
        with running.connected(s) as scratch_conn:
            if search_path is not None:
                # Unqualified names resolve as on the target, whose user and defaults may differ
                # from the scratch server's (a role "app" whose "$user" is a schema "app").
                # Before the migrations create them, none of its schemas may exist there:
                # public stands in at the end, where mg's own tables can go.
                s.hooks.query(
                    s,
                    scratch_conn,
                    "SELECT pg_catalog.set_config('search_path', %s, false)",
                    (search_path,),
                )
                s.hooks.query(
                    s,
                    scratch_conn,
                    "SELECT pg_catalog.set_config('search_path', "
                    "pg_catalog.current_setting('search_path') || ', public', false) "
                    "WHERE pg_catalog.current_schemas(false) = '{}'",
                )
            s.hooks.history_prepare(s, scratch_conn)
            for migration in applied:
                try:
                    running.run_migration(s, scratch_conn, migration, "up")
                except MgError as exc:
                    raise MigrationFailed(
                        "cannot rebuild the schema from the applied migrations on the scratch "
                        f"database: {scratch_failure(migration.id, exc.message)}"
                    ) from exc
            expected = snapshot.take(s, scratch_conn)
    result.differences = diff.compare(expected, actual, ignore)
    return result


def _server_version(session: Session, conn: Any) -> int | None:
    rows = session.hooks.query(session, conn, "SHOW server_version_num")
    try:
        return int(rows[0][0]) // 10000
    except (IndexError, TypeError, ValueError):
        return None


def _search_path(session: Session, conn: Any) -> str | None:
    """The target's ``search_path`` with ``$user`` spelled as the target's user, so the scratch
    database, reached as another user, resolves unqualified names to the same schemas."""
    rows = session.hooks.query(
        session, conn, "SELECT current_setting('search_path'), quote_ident(current_user)"
    )
    try:
        path, user = str(rows[0][0]), str(rows[0][1])
    except (IndexError, TypeError):
        return None
    return path.replace('"$user"', user).replace("$user", user)
