"""Object-level differences between two snapshots, worded for the question being asked.

``expected`` is what should be there (the schema before ``up``, or the one the migrations
produce), ``actual`` what is there. A table that exists on one side only is reported once:
its columns, constraints, indexes and triggers are not listed again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from migretti_plugins.check.snapshot import Snapshot

_SHORT = 72
# Properties named in the plural: "labels are [...]", not "labels is [...]".
_PLURAL = frozenset({"labels", "attributes", "constraints", "roles", "options"})


@dataclass(frozen=True)
class Wording:
    """How to say that an object is only on one side, or differs."""

    only_actual: str
    only_expected: str
    actual: str
    expected: str
    actual_name: str
    expected_name: str


DRIFT = Wording(
    only_actual="in the database, not produced by the migrations",
    only_expected="produced by the migrations, not in the database",
    actual="in the database",
    expected="from the migrations",
    actual_name="database",
    expected_name="migrations",
)
DOWN = Wording(
    only_actual="left behind by down",
    only_expected="there before up, gone after down",
    actual="after down",
    expected="before up",
    actual_name="after_down",
    expected_name="before_up",
)
UP_AGAIN = Wording(
    only_actual="there after up runs again, not after its first run",
    only_expected="there after the first up, not after up runs again",
    actual="after up runs again",
    expected="after the first up",
    actual_name="after_up_again",
    expected_name="after_first_up",
)


@dataclass(frozen=True)
class Difference:
    """One object that differs: ``side`` says where it is, ``changes`` what differs."""

    key: str
    side: Literal["actual", "expected", "both"]
    changes: tuple[tuple[str, Any, Any], ...] = ()

    def describe(self, wording: Wording) -> str:
        if self.side == "actual":
            return f"{self.key}: {wording.only_actual}"
        if self.side == "expected":
            return f"{self.key}: {wording.only_expected}"
        parts = []
        for prop, actual, expected in self.changes:
            a, e = _show(actual), _show(expected)
            if len(a) > _SHORT or len(e) > _SHORT:
                parts.append(f"{prop} differs ({wording.actual} vs {wording.expected})")
            else:
                verb = "are" if prop in _PLURAL else "is"
                parts.append(f"{prop} {verb} {a} {wording.actual}, {e} {wording.expected}")
        return f"{self.key}: " + "; ".join(parts)

    def as_dict(self, wording: Wording) -> dict[str, Any]:
        data: dict[str, Any] = {
            "object": self.key,
            "where": {"actual": wording.actual_name, "expected": wording.expected_name}.get(
                self.side, "both"
            ),
            "message": self.describe(wording),
        }
        if self.changes:
            data["changes"] = [
                {"property": prop, wording.actual_name: actual, wording.expected_name: expected}
                for prop, actual, expected in self.changes
            ]
        return data


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return " ".join(value.split())
    return json.dumps(value)


def compare(expected: Snapshot, actual: Snapshot, ignore: Sequence[str] = ()) -> list[Difference]:
    """Every object only in one snapshot or with different properties, sorted by key.

    ``ignore`` holds glob patterns (``fnmatch``) of object keys left out of the comparison,
    such as ``extension pg_stat_statements`` or ``schema cron*``.
    """
    if ignore:
        expected = _without(expected, ignore)
        actual = _without(actual, ignore)
    only_actual = set(actual) - set(expected)
    only_expected = set(expected) - set(actual)
    found: list[Difference] = []
    for key in sorted(only_actual):
        if actual[key].parent not in only_actual:
            found.append(Difference(key, "actual"))
    for key in sorted(only_expected):
        if expected[key].parent not in only_expected:
            found.append(Difference(key, "expected"))
    for key in sorted(set(actual) & set(expected)):
        a, e = actual[key].props, expected[key].props
        if a == e:
            continue
        changes = tuple(
            (prop, a.get(prop), e.get(prop))
            for prop in sorted(set(a) | set(e))
            if a.get(prop) != e.get(prop)
        )
        found.append(Difference(key, "both", changes))
    found.sort(key=lambda d: d.key)
    return found


def _without(snapshot: Snapshot, patterns: Sequence[str]) -> Snapshot:
    """``snapshot`` without the objects a pattern names, nor what belongs to them (a table's
    columns, the comment on one of its columns)."""
    return {
        key: obj
        for key, obj in snapshot.items()
        if not any(fnmatchcase(name, p) for name in _lineage(snapshot, key) for p in patterns)
    }


def _lineage(snapshot: Snapshot, key: str) -> list[str]:
    """``key`` and the keys of the objects it belongs to, nearest first."""
    names = [key]
    parent = snapshot[key].parent
    while parent is not None and parent not in names:
        names.append(parent)
        found = snapshot.get(parent)
        parent = found.parent if found is not None else None
    return names
