"""Errors that reach the user, each carrying the exit code of docs/commands.md.

Every error the CLI prints is an ``MgError``: anything else is a bug and is shown
as one line plus a hint to rerun with ``-v`` for the traceback.
"""

from __future__ import annotations

from typing import Any

from migretti_core.messages import printable

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BLOCKED = 3
EXIT_LOCK_TIMEOUT = 4
EXIT_ABORTED = 5
EXIT_INTERRUPTED = 130


class MgError(Exception):
    """Base of every error meant for the user: a short message and an exit code."""

    exit_code: int = EXIT_FAILURE
    #: Set by the Python API: what the command had done when it failed (a result object).
    result: object | None = None
    #: Already told the user (as a warning, say): the CLI only exits with ``exit_code``.
    reported: bool = False
    #: The plugin the error is about (it failed, or vetoed the confirmation), by its
    #: registered name; the ``plugin`` field of the ``command.failed`` event.
    plugin: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt without ``__init__``, whose arguments differ from class to class, so an
        # error crosses a process boundary (multiprocessing, concurrent.futures) whole.
        return (_rebuilt, (type(self), self.args), self.__dict__)


def _rebuilt(cls: type[MgError], args: tuple[Any, ...]) -> MgError:
    error = cls.__new__(cls)
    error.args = args
    return error


class ConfigError(MgError):
    """mg.yaml, the environment or the command line is wrong (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigRefused(ConfigError):
    """mg will not read the configuration file at all: not a regular file, 1 MiB or more,
    YAML aliases expanding past their budget (exit 2).

    Fatal at startup for every command, ``--help`` included: it is raised before anything
    else and never deferred like other configuration errors.
    """


class UsageError(MgError):
    """The command was called wrongly (exit 2)."""

    exit_code = EXIT_USAGE


class PluginError(MgError):
    """A plugin could not be loaded or misbehaves (exit 2)."""

    exit_code = EXIT_USAGE


class NoPluginAnswers(PluginError):
    """No plugin answered a hook that needs an answer: a builtin blocked with ``-p no:NAME``
    and not replaced (exit 2). ``hook`` names the hook."""

    def __init__(self, message: str, hook: str) -> None:
        super().__init__(message)
        self.hook = hook


class PluginFailed(MgError):
    """A plugin's hook implementation raised something other than an ``MgError``.

    Names the plugin and the hook; the exit code is the hook's (1 at run time, 2 for
    configuration and validation). The original exception is its ``__cause__``.
    """

    def __init__(self, plugin: str, hook: str, error: BaseException, exit_code: int) -> None:
        super().__init__(
            f"plugin {plugin!r} failed in {hook}: {type(error).__name__}: {printable(str(error))}",
            hint=f"disable it with -p no:{plugin}",
        )
        self.plugin = plugin
        self.hook = hook
        self.exit_code = exit_code


class MigrationFileError(MgError):
    """One or more migration files are invalid; ``problems`` lists them all (exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str], *, migration_id: str | None = None) -> None:
        self.problems = list(problems)
        # The id the file's name gives, when it gives one: a broken file still takes part in
        # the duplicate-id check of its directory.
        self.migration_id = migration_id
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems in migration files:\n  " + "\n  ".join(
                self.problems
            )
        super().__init__(message)


class StateError(MgError):
    """The database state blocks the operation (exit 3)."""

    exit_code = EXIT_BLOCKED


class LockTimeout(MgError):
    """The advisory lock could not be taken in time (exit 4)."""

    exit_code = EXIT_LOCK_TIMEOUT


class Aborted(MgError):
    """The user declined, or confirmation was impossible (exit 5)."""

    exit_code = EXIT_ABORTED


class ConfirmationRequired(Aborted):
    """Code targeted a protected environment without ``confirm=True`` (exit 5)."""


class FleetFailed(MgError):
    """A command failed on members of a fleet (Python API, ``Migretti.fleet``).

    ``exit_code`` is the first failed member's in fleet order, as ``mg --fleet`` exits;
    ``result`` is the whole ``FleetResult``, each member with its own exception.
    """

    def __init__(self, message: str, exit_code: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


class DatabaseError(MgError):
    """Connecting to or talking with the database failed (exit 1)."""

    exit_code = EXIT_FAILURE


class MigrationFailed(MgError):
    """A migration's SQL failed on the server (exit 1)."""

    exit_code = EXIT_FAILURE


class HookFailed(MgError):
    """A shell hook or a lifecycle plugin refused or failed (exit 1)."""

    exit_code = EXIT_FAILURE


class SqlError(MigrationFailed):
    """The server refused SQL; carries what PostgreSQL said so the engine can name file and line.

    ``position`` is the 1-based character offset into the SQL text that was sent: where the
    server placed the error, or the start of the failing statement when it gave no position.
    ``context`` is the server's CONTEXT (for example the PL/pgSQL line of a function).
    Once the engine has placed it in a migration, ``file``, ``line`` (1-based, in that file)
    and ``migration_id`` say where, and ``message`` is the full report the CLI prints.
    ``server_message`` and ``server_hint`` are the server's texts as it sent them; until
    then ``message`` and ``hint`` are those texts as mg prints them, each on one line, its
    line breaks and other control characters escaped (``first\\nsecond``), so that a
    server's text (a migration's ``RAISE``) never starts a line of mg's output.
    ``block_rolled_back`` is set by the database plugin when the statement failed inside a
    transaction block the SQL itself opened (``BEGIN`` in a no-transaction migration): that
    block was rolled back, so the statements of it that ran before are undone too.
    """

    block_rolled_back: bool = False

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
        position: int | None = None,
        context: str | None = None,
        file: str | None = None,
        line: int | None = None,
        migration_id: str | None = None,
    ) -> None:
        super().__init__(printable(message), hint=printable(hint) if hint else hint)
        self.server_message = message
        self.server_hint = hint
        self.sqlstate = sqlstate
        self.detail = detail
        self.position = position
        self.context = context
        self.file = file
        self.line = line
        self.migration_id = migration_id


class Interrupted(MgError):
    """Ctrl-C or SIGTERM stopped a command after it said what state it left (exit 130)."""

    exit_code = EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised like Ctrl-C so the same clean-up runs; tells them apart.
    Its argument is the signal's name."""

    @property
    def signal_name(self) -> str:
        return str(self.args[0]) if self.args else "SIGTERM"
