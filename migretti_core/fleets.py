"""The Python API on a fleet: ``Migretti(...).fleet("tenants").apply()``.

A ``Fleet`` runs one of ``Migretti``'s methods on every member of a fleet of mg.yaml, each
member through an instance of its own (its connection, advisory lock, history and plugins,
exactly as ``Migretti`` pointed at that database alone), in threads: at most ``jobs`` at
once, ``canary`` members first, ``fail_fast`` optional, as ``mg --fleet`` does. It returns
a ``FleetResult`` holding each member's ``MemberResult`` (the fields of ``mg --fleet
--format json``, with the member's own result object) and prints nothing. The guide is
docs/python-api.md; the fleet itself is docs/scaling.md.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from migretti_core import hookimpl
from migretti_core.errors import (
    ConfirmationRequired,
    FleetFailed,
    MgError,
    PluginError,
    UsageError,
)
from migretti_core.results import (
    FixResult,
    FleetResult,
    HistoryRow,
    LintResult,
    MemberResult,
    MemberState,
    MigrationRow,
    RunResult,
    SeedResult,
    StatusResult,
    VerifyResult,
)
from migretti_core.types import Config, ConfigRequest, Event, Level
from migretti_core.workers import Worker

if TYPE_CHECKING:
    from migretti_core.application import Migretti
    from migretti_plugins.fleet.members import FleetSettings, Member

T = TypeVar("T")
SHOWN = 5  # members named in a confirmation error


class _MemberTarget:
    """Points one instance at one member: the profile's configuration, the member's
    connection and ``MG_TARGET`` (``fleet.runner``, as ``mg --fleet`` does)."""

    def __init__(self, member: Member) -> None:
        self.member = member

    @hookimpl(wrapper=True)
    def mg_load_config(self, request: ConfigRequest) -> Generator[None, Config, Config]:
        from migretti_plugins.fleet.runner import member_config

        config = yield
        return member_config(config, self.member)

    @hookimpl
    def mg_program_environment(self) -> dict[str, str]:
        from migretti_plugins.fleet.runner import member_environment

        return member_environment(self.member)


def _count(value: int | None, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"fleet: {what} must be an integer of at least {minimum}, not {value!r}")
    return value


def _moved(output: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ids applied and rolled back, from a member's ``RunResult`` (none for others)."""
    if not isinstance(output, RunResult) or output.dry_run:
        return (), ()
    ids = tuple(m.id for m in output.migrations if m.executed and m.ok)
    return (ids, ()) if output.direction == "up" else ((), ids)


class Fleet:
    """One fleet of mg.yaml, for ``Migretti``'s methods; made by ``Migretti.fleet(name)``."""

    def __init__(
        self,
        owner: Migretti,
        name: str,
        *,
        jobs: int | None = None,
        canary: int | None = None,
        fail_fast: bool = False,
        raise_on_failure: bool = True,
    ) -> None:
        if owner._app.loader.pm.get_plugin("fleet") is None:
            raise PluginError("fleets are not available: the fleet plugin is not loaded")
        from migretti_plugins.fleet.members import DEFAULT_JOBS, fleet_named

        self._owner = owner
        self._settings: FleetSettings = fleet_named(owner.config, name, owner._app.environ)
        self.name = name
        self.jobs = _count(jobs, "jobs", 1) or self._settings.jobs or DEFAULT_JOBS
        given = _count(canary, "canary", 0)
        self.canary = given if given is not None else (self._settings.canary or 0)
        _check("fleet", fail_fast=fail_fast, raise_on_failure=raise_on_failure)
        self.fail_fast = fail_fast
        self.raise_on_failure = raise_on_failure

    def __repr__(self) -> str:
        return f"<Fleet {self.name} jobs={self.jobs} canary={self.canary}>"

    # --- members ------------------------------------------------------------------------------

    def _resolve(self, command: str) -> tuple[builtins.list[Member], bool]:
        """The members (``query`` runs on the profile's database) and whether it is protected."""
        from migretti_plugins.fleet.members import resolve

        owner = self._owner
        with owner._lock:
            session = owner._session(command)
            members = resolve(session, self._settings, owner._app.environ)
            protected = session.hooks.is_protected(session)
        return members, protected

    def members(self) -> tuple[str, ...]:
        """The members' names, in fleet order (a URL's password masked)."""
        return tuple(m.name for m in self._resolve("list")[0])

    # --- running ------------------------------------------------------------------------------

    def _run(
        self,
        command: str,
        call: Callable[[Migretti], T],
        *,
        changing: bool = False,
        confirm: bool = False,
    ) -> FleetResult[T]:
        members, protected = self._resolve(command)
        if changing and protected and not (self._owner._confirm or confirm):
            env = self._owner.config.env or "(default)"
            shown = ", ".join(m.name for m in members[:SHOWN])
            if len(members) > SHOWN:
                shown += f" and {len(members) - SHOWN} more"
            raise ConfirmationRequired(
                f"environment {env} is protected: {command} on fleet {self.name} "
                f"({len(members)} database{'s' if len(members) != 1 else ''}: {shown}) "
                "runs only with confirm=True",
                hint="pass confirm=True to the method (or to Migretti) once a person has decided",
            )
        results: builtins.list[MemberResult[T] | None] = [None] * len(members)
        reasons: dict[int, str] = {}
        stop = threading.Event()
        log = self._owner._api.log  # the fleet's own events, as mg's JSON log has them
        if not members:
            log(Event("fleet.empty", "warning", f"fleet {self.name} has no members", {}))
        else:
            log(
                Event(
                    "fleet.started",
                    "info",
                    f"{command} on fleet {self.name}: {len(members)} database"
                    f"{'s' if len(members) != 1 else ''}, {self.jobs} at a time"
                    + (f", canary {self.canary}" if self.canary else ""),
                    {"fleet": self.name, "members": len(members), "jobs": self.jobs},
                )
            )

        def one(index: int) -> None:
            result = self._member(members[index], call)
            results[index] = result
            detail = f": {result.error}" if result.error and not result.ok else ""
            log(
                Event(
                    "fleet.member.finished",
                    "info",
                    f"{result.name}: {result.result} in {result.duration_ms} ms{detail}",
                    {
                        "target": result.name,
                        "result": result.result,
                        "exit_code": result.exit_code,
                        "duration_ms": result.duration_ms,
                        "error": result.error,
                    },
                )
            )
            if not result.ok and self.fail_fast:
                stop.set()

        canary = min(self.canary, len(members))
        if canary:
            _batch(range(canary), self.jobs, stop, one)
            if not all(r is not None and r.ok for r in results[:canary]):
                stop.set()
                reasons.update(dict.fromkeys(range(canary, len(members)), "a canary failed"))
        if not stop.is_set():
            _batch(range(canary, len(members)), self.jobs, stop, one)
        done = tuple(
            result
            if result is not None
            else MemberResult[T](
                members[index].name,
                "skipped",
                error=f"not started: {reasons.get(index, 'an earlier member failed')}",
            )
            for index, result in enumerate(results)
        )
        outcome = FleetResult(self.name, done)
        if members:
            succeeded = sum(1 for m in done if m.ok)
            level: Level = "info" if outcome.ok else "warning"
            log(
                Event(
                    "fleet.finished",
                    level,
                    f"fleet {self.name}: {succeeded} of {len(done)} succeeded",
                    {
                        "fleet": self.name,
                        "ok": outcome.ok,
                        "succeeded": succeeded,
                        "failed": sum(1 for m in done if m.result == "failed"),
                        "skipped": sum(1 for m in done if m.result == "skipped"),
                    },
                )
            )
        if not outcome.ok and self.raise_on_failure:
            failed = outcome.failed
            lines = [f"{m.name}: {m.error}" for m in failed if m.result != "skipped"]
            skipped = len(failed) - len(lines)
            error = FleetFailed(
                f"{command} on fleet {self.name}: {len(done) - len(failed)} of {len(done)} "
                "succeeded"
                + "".join(f"\n  {line}" for line in lines[:SHOWN])
                + (f"\n  ... and {len(lines) - SHOWN} more" if len(lines) > SHOWN else "")
                + (f"\n  {skipped} not started" if skipped else ""),
                outcome.exit_code,
            )
            error.result = outcome
            raise error
        return outcome

    def _member(self, member: Member, call: Callable[[Migretti], T]) -> MemberResult[T]:
        started = time.monotonic()
        output: Any = None
        exception: MgError | None = None
        try:
            instance = self._owner._for_member(("fleet-member", _MemberTarget(member)), member.name)
            output = call(instance)
        except MgError as exc:
            exception = exc
            output = exc.result
        except Exception as exc:  # a bug, reported as mg reports one
            exception = MgError(f"unexpected error: {type(exc).__name__}: {exc}")
            exception.__cause__ = exc
        duration = int((time.monotonic() - started) * 1000)
        applied, rolled_back = _moved(output)
        state: MemberState = "ok" if exception is None else "failed"
        return MemberResult(
            name=member.name,
            result=state,
            exit_code=0 if exception is None else exception.exit_code,
            applied=applied,
            rolled_back=rolled_back,
            error=None if exception is None else (str(exception).splitlines() or [""])[0],
            duration_ms=duration,
            output=output,
            exception=exception,
        )

    # --- the commands ---------------------------------------------------------------------------

    def apply(
        self,
        to: str | None = None,
        dry_run: bool = False,
        *,
        allow_out_of_order: bool = False,
        verify: bool = True,
        single_transaction: bool = False,
        confirm: bool = False,
    ) -> FleetResult[RunResult]:
        """``mg apply --fleet NAME``: each member's ``RunResult``."""
        _check("apply", to=to, dry_run=dry_run, allow_out_of_order=allow_out_of_order)
        _check("apply", verify=verify, single_transaction=single_transaction, confirm=confirm)
        return self._run(
            "apply",
            lambda mg: mg.apply(
                to,
                dry_run,
                allow_out_of_order=allow_out_of_order,
                verify=verify,
                single_transaction=single_transaction,
                confirm=True,
            ),
            changing=True,  # a dry run executes SQL too: confirmed as mg asks
            confirm=confirm,
        )

    def up(
        self,
        dry_run: bool = False,
        *,
        allow_out_of_order: bool = False,
        verify: bool = True,
        confirm: bool = False,
    ) -> FleetResult[RunResult]:
        """``mg up --fleet NAME``."""
        _check("up", dry_run=dry_run, allow_out_of_order=allow_out_of_order, verify=verify)
        _check("up", confirm=confirm)
        return self._run(
            "up",
            lambda mg: mg.up(
                dry_run, allow_out_of_order=allow_out_of_order, verify=verify, confirm=True
            ),
            changing=True,  # a dry run executes SQL too: confirmed as mg asks
            confirm=confirm,
        )

    def down(
        self,
        dry_run: bool = False,
        *,
        allow_missing_down: bool = False,
        verify: bool = True,
        confirm: bool = False,
    ) -> FleetResult[RunResult]:
        """``mg down --fleet NAME``."""
        _check("down", dry_run=dry_run, allow_missing_down=allow_missing_down, verify=verify)
        _check("down", confirm=confirm)
        return self._run(
            "down",
            lambda mg: mg.down(
                dry_run, allow_missing_down=allow_missing_down, verify=verify, confirm=True
            ),
            changing=True,  # a dry run executes SQL too: confirmed as mg asks
            confirm=confirm,
        )

    def rollback(
        self,
        n: int = 1,
        to: str | None = None,
        dry_run: bool = False,
        *,
        allow_missing_down: bool = False,
        verify: bool = True,
        confirm: bool = False,
    ) -> FleetResult[RunResult]:
        """``mg rollback [N] [--to ID] --fleet NAME``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UsageError(f"rollback: n must be an integer of at least 1, not {n!r}")
        _check("rollback", to=to, dry_run=dry_run, allow_missing_down=allow_missing_down)
        _check("rollback", verify=verify, confirm=confirm)
        return self._run(
            "rollback",
            lambda mg: mg.rollback(
                n,
                to,
                dry_run,
                allow_missing_down=allow_missing_down,
                verify=verify,
                confirm=True,
            ),
            changing=True,  # a dry run executes SQL too: confirmed as mg asks
            confirm=confirm,
        )

    def fix(
        self, id: str, applied: bool = True, *, confirm: bool = False
    ) -> FleetResult[FixResult]:
        """``mg fix ID --applied`` (``applied=False``: ``--remove``) on every member."""
        _check("fix", id=id, applied=applied, confirm=confirm)
        return self._run(
            "fix", lambda mg: mg.fix(id, applied, confirm=True), changing=True, confirm=confirm
        )

    def seed(
        self,
        names: Sequence[str] | str | None = None,
        *,
        all: bool = False,
        dry_run: bool = False,
        confirm: bool = False,
    ) -> FleetResult[SeedResult]:
        """``mg seed [NAME...] [--all] --fleet NAME``."""
        _check("seed", names=names, all=all, dry_run=dry_run, confirm=confirm)
        return self._run(
            "seed",
            lambda mg: mg.seed(names, all=all, dry_run=dry_run, confirm=True),
            changing=True,  # a dry run executes SQL too: confirmed as mg asks
            confirm=confirm,
        )

    def status(self) -> FleetResult[StatusResult]:
        """``mg status --fleet NAME`` (a member succeeds whatever its state, as there)."""
        return self._run("status", lambda mg: mg.status())

    def list(self) -> FleetResult[tuple[MigrationRow, ...]]:
        """``mg list --fleet NAME``."""
        return self._run("list", lambda mg: mg.list())

    def head(self) -> FleetResult[HistoryRow | None]:
        """``mg head --fleet NAME``."""
        return self._run("head", lambda mg: mg.head())

    def verify(self) -> FleetResult[VerifyResult]:
        """``mg verify --fleet NAME``: a member with a mismatch fails with exit code 3, its
        ``VerifyResult`` as ``output``."""
        return self._run("verify", lambda mg: mg.verify())

    def lint(
        self,
        *,
        strict: bool = False,
        enable: Sequence[str] = (),
        disable: Sequence[str] = (),
        server_version: int | None = None,
    ) -> FleetResult[LintResult]:
        """``mg lint --fleet NAME``: each member's pending migrations, as one plan. (Every
        file, or files by name, read no database: ``Migretti.lint`` lints them once.)"""
        _check("lint", strict=strict)
        return self._run(
            "lint",
            lambda mg: mg.lint(
                strict=strict, enable=enable, disable=disable, server_version=server_version
            ),
        )


def _check(method: str, **arguments: object) -> None:
    """The arguments' types, checked once before any member starts (``confirm="no"`` must
    not count as a confirmation for the whole fleet)."""
    from migretti_core.application import _flags, _migration_name, _names

    for name, value in arguments.items():
        if name == "to":
            if value is not None:
                _migration_name(method, name, value)
        elif name == "id":
            _migration_name(method, name, value)
        elif name == "names":
            _names(method, value, "seed")
        else:
            _flags(method, **{name: value})


def _batch(
    indexes: Sequence[int], jobs: int, stop: threading.Event, one: Callable[[int], None]
) -> None:
    """Run ``one(index)`` for each index, ``jobs`` threads at once, none started once
    ``stop`` is set. Ctrl-C starts nothing more and waits for the running members."""
    queue = deque(indexes)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not queue or stop.is_set():
                    return
                index = queue.popleft()
            one(index)

    workers = [Worker(work, name=f"mg-fleet-{n}") for n in range(min(jobs, len(queue)))]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            while not worker.wait(0.1):
                pass
    except KeyboardInterrupt:
        stop.set()
        for worker in workers:
            worker.wait()
        raise


__all__ = ["Fleet"]
