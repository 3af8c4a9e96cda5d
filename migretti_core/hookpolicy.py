"""How each hook is called: its policy, its result type, the version it appeared in.

``hookspecs.py`` declares every hook with ``@spec(POLICY, ...)``; the one calling routine in
``hooks.py`` reads the declaration. The policies:

- ``FIRST``: the first implementation that answers (not None) wins; an error stops the call.
- ``COLLECT``: every implementation answers; an error stops the call.
- ``GATE``: every implementation is asked before a change; any exception stops the command
  before anything changes (fails closed), so a crashing safety check never lets a deploy
  through.
- ``NOTIFY``: every implementation is told; an exception, even an ``MgError``, or an answer
  of the wrong type, is reported as a warning naming the plugin and the others are still
  told.
- ``AFTER``: like ``NOTIFY``, but an ``MgError`` (a deliberate failure) makes the command
  fail once every implementation was told.
- ``SETUP``: like ``GATE``, for configuration: the command stops with exit 2.

An implementation's exception that is not an ``MgError`` is turned into a ``PluginFailed``
naming the plugin and the hook; a result of the wrong type is a ``PluginError`` (exit 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from migretti_core import hookspec
from migretti_core.errors import EXIT_FAILURE, EXIT_USAGE
from migretti_core.records import record

F = TypeVar("F", bound=Callable[..., Any])

Check = Callable[[Any], "str | None"]


@record(frozen=True)
class Policy:
    """What a call does with answers and errors (see the module docstring)."""

    name: str
    firstresult: bool = False
    on_mg_error: Literal["raise", "warn", "defer"] = "raise"
    on_crash: Literal["raise", "warn"] = "raise"
    crash_exit: int = EXIT_FAILURE
    # an answer of the wrong type: an error (exit 2), or for hooks that only tell, a warning
    # naming the plugin, the answer left out
    on_wrong_answer: Literal["raise", "warn"] = "raise"

    def exiting(self, code: int) -> Policy:
        """The same policy with another exit code for a crashing implementation."""
        return dataclasses.replace(self, crash_exit=code)

    def refusing_wrong_answers(self) -> Policy:
        """The same policy, an answer of the wrong type an error (exit 2)."""
        return dataclasses.replace(self, on_wrong_answer="raise")


FIRST = Policy("first", firstresult=True)
COLLECT = Policy("collect")
GATE = Policy("gate")
NOTIFY = Policy("notify", on_mg_error="warn", on_crash="warn", on_wrong_answer="warn")
AFTER = Policy("after", on_mg_error="defer", on_crash="warn", on_wrong_answer="warn")
SETUP = Policy("setup", crash_exit=EXIT_USAGE)


@record(frozen=True)
class HookInfo:
    """Everything the core knows about one hook besides its signature."""

    policy: Policy
    since: str
    check: Check | None = None
    required: str | None = None
    status: Literal["stable", "experimental", "deprecated"] = "stable"
    note: str | None = None


class ExperimentalHookWarning(FutureWarning):
    """Implementing a hook that may still change without a deprecation period."""


class DeprecatedHookWarning(DeprecationWarning):
    """Implementing a hook that will be removed."""


def spec(
    policy: Policy,
    *,
    since: str = "1.0",
    returns: Check | None = None,
    required: str | None = None,
    experimental: str | None = None,
    deprecated: str | None = None,
) -> Callable[[F], F]:
    """Declare a hook specification with its calling policy.

    ``returns`` checks an answer (see ``instance_of``, ``list_of``); ``required`` names what is
    missing when no plugin answers a ``FIRST`` hook (``str.format`` with the call's arguments),
    None when no answer is fine. ``experimental``/``deprecated`` hold the text pluggy warns
    with (``warn_on_impl``) when a plugin implements the hook.
    """

    def mark(function: F) -> F:
        status: Literal["stable", "experimental", "deprecated"] = "stable"
        warning: Warning | None = None
        note = None
        if deprecated is not None:
            status, note = "deprecated", deprecated
            warning = DeprecatedHookWarning(
                f"{function.__name__} is deprecated (since {since}): {deprecated}"
            )
        elif experimental is not None:
            status, note = "experimental", experimental
            warning = ExperimentalHookWarning(
                f"{function.__name__} is experimental (since {since}): {experimental}"
            )
        function.mg_hook = HookInfo(  # type: ignore[attr-defined]
            policy, since, returns, required, status, note
        )
        marked: F = hookspec(firstresult=policy.firstresult, warn_on_impl=warning)(function)
        return marked

    return mark


def info_of(function: object, firstresult: bool = False) -> HookInfo:
    """The declaration of a spec function; a plain pluggy hookspec gets a default one."""
    found = getattr(function, "mg_hook", None)
    if isinstance(found, HookInfo):
        return found
    return HookInfo(FIRST if firstresult else COLLECT, since="?")


# --- result checks ---------------------------------------------------------------------------


def _name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _what(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def instance_of(kind: type | tuple[type, ...]) -> Check:
    """The answer must be an instance of ``kind``."""

    def check(value: Any) -> str | None:
        return None if isinstance(value, kind) else f"{_what(value)} instead of {_name(kind)}"

    return check


def list_of(kind: type | tuple[type, ...]) -> Check:
    """A list or tuple (never a ``str``) whose items are instances of ``kind``."""

    def check(value: Any) -> str | None:
        if not isinstance(value, list | tuple):
            return f"{_what(value)} instead of a list of {_name(kind)}"
        for item in value:
            if not isinstance(item, kind):
                return f"a list holding {_what(item)} instead of {_name(kind)}"
        return None

    return check


def a_path() -> Check:
    """``instance_of(pathlib.Path)``, with pathlib imported when an answer is checked."""

    def check(value: Any) -> str | None:
        from pathlib import Path

        return instance_of(Path)(value)

    return check


def list_of_paths() -> Check:
    """``list_of(pathlib.Path)``, with pathlib imported when an answer is checked."""

    def check(value: Any) -> str | None:
        from pathlib import Path

        return list_of(Path)(value)

    return check


def mapping_of(kind: type | tuple[type, ...]) -> Check:
    """A mapping with text keys and values that are instances of ``kind``."""

    def check(value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"{_what(value)} instead of a mapping"
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, kind):
                return f"a mapping holding {key!r}: {_what(item)}"
        return None

    return check


def nothing(value: Any) -> str | None:
    """A gate answers nothing: an answer (``False`` meant as a veto) is refused, so a check
    that thought it stopped the command never lets it through."""
    return f"{_what(value)} instead of None"


nothing.hint = "a gate stops the command by raising, e.g. HookFailed"  # type: ignore[attr-defined]


def held(value: Any) -> str | None:
    """``mg_lock_acquire`` answers True once the lock is held: a ``False`` (a lock not taken)
    is refused, so the command never runs without its lock."""
    return None if value is True else f"{_what(value)} instead of True"


held.hint = "a lock that cannot be had raises, e.g. LockTimeout"  # type: ignore[attr-defined]


def wrong_answer_hint(check: Check | None, plugin: str) -> str:
    """The hint of the error for a wrong answer: what the hook expects, then the way out."""
    why = getattr(check, "hint", None)
    fix = f"fix the plugin or disable it with -p no:{plugin}"
    return f"{why}; {fix}" if why else fix


def context_manager(value: Any) -> str | None:
    """The answer must be usable in a ``with`` statement."""
    if hasattr(value, "__enter__") and hasattr(value, "__exit__"):
        return None
    return f"{_what(value)} instead of a context manager"
