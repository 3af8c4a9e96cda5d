"""``migretti_core.records.record`` makes the class ``dataclasses.dataclass`` makes."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from migretti_core import types
from migretti_core.records import record


def _frozen_pair(make: Callable[[type], type]) -> type:
    class Point:
        """A point."""

        x: int
        y: float = 1.5
        tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)
        note: str | None = dataclasses.field(default=None, repr=False, compare=False)

        def norm(self) -> float:
            return abs(self.x) + abs(self.y)

    return make(Point)


def _plain_pair(make: Callable[[type], type]) -> type:
    class Bag:
        """A bag."""

        name: str
        items: list[str] = dataclasses.field(default_factory=list)

    return make(Bag)


def _observe_frozen(cls: Any, compiled: bool) -> list[Any]:
    # A record binds the arguments of its first calls itself and compiles its __init__ later
    # (or when its signature is asked for): both must behave as the dataclass.
    first_signature = str(inspect.signature(cls)) if compiled else None
    seen: list[Any] = [
        [(f.name, f.type, f.default, f.repr, f.compare, f.hash) for f in dataclasses.fields(cls)],
        cls.__match_args__,
        dataclasses.is_dataclass(cls),
        {n: getattr(cls.__dataclass_params__, n) for n in ("init", "repr", "eq", "frozen")},
    ]
    a = cls(1)
    b = cls(1, 1.5, {}, "other note")
    c = cls(x=2, y=3.0, tags={"k": 1})
    seen += [repr(a), repr(c), a == b, a != c, a == (1, 1.5), a.norm(), _hash(a)]
    seen += [
        _hash(cls(1, 2.0, None)) == _hash(cls(1, 2.0, None, "other")),
        _hash(cls(1, 2.0, None)),
    ]
    seen += [a.tags is not cls(1).tags, a.__eq__(object())]
    for attempt in (lambda: setattr(a, "x", 5), lambda: delattr(a, "y")):
        with pytest.raises(dataclasses.FrozenInstanceError) as caught:
            attempt()
        seen.append(str(caught.value))
    d = dataclasses.replace(c, y=9.0)
    seen += [repr(d), d == c, dataclasses.asdict(d), dataclasses.astuple(d)]
    seen += [copy.deepcopy(c) == c, copy.copy(c) == c]
    for wrong in ((), (1, 2, 3, 4, 5), {"nope": 2}, {"x": 2}):
        with pytest.raises(TypeError) as caught:
            cls(*wrong) if isinstance(wrong, tuple) else cls(1, **wrong)
        seen.append(str(caught.value).replace(cls.__qualname__, "_"))
    seen.append(str(inspect.signature(cls)))
    seen.append(first_signature or str(inspect.signature(cls)))

    @dataclasses.dataclass(frozen=True)
    class Sub(cls):  # type: ignore[misc, valid-type]
        extra: int = 0

    s = Sub(1, extra=4)
    seen += [repr(s).replace("Sub", "_"), s == Sub(1, extra=4), s == cls(1)]
    with pytest.raises(TypeError):
        dataclasses.dataclass(class_with_base(cls))
    return seen


def _hash(value: object) -> object:
    try:
        return hash(value)
    except TypeError as error:
        return str(error)


def class_with_base(base: type) -> type:
    return type("Loose", (base,), {"__annotations__": {"z": "int"}, "z": 0})


@pytest.mark.parametrize("compiled", [False, True])
def test_a_frozen_record_behaves_as_a_frozen_dataclass(compiled: bool) -> None:
    ours = _observe_frozen(_frozen_pair(record(frozen=True)), compiled)
    assert ours == _observe_frozen(_frozen_pair(dataclasses.dataclass(frozen=True)), compiled)


def test_a_record_compiles_its_init_after_its_first_calls() -> None:
    cls: Any = _frozen_pair(record(frozen=True))
    assert "__signature__" in cls.__dict__ and cls.__init__.__code__.co_varnames[1] == "args"
    made = [cls(i, tags={}) for i in range(100)]
    assert cls.__init__.__code__.co_varnames[1] == "x"
    assert made[3] == cls(3) and made[99] == cls(x=99)
    assert _observe_frozen(cls, False) == _observe_frozen(
        _frozen_pair(dataclasses.dataclass(frozen=True)), False
    )


@pytest.mark.parametrize("make", [record, dataclasses.dataclass])
def test_a_plain_record_behaves_as_a_dataclass(make: Any) -> None:
    def observe(cls: Any) -> list[Any]:
        a = cls("a")
        a.items.append("x")
        a.name = "b"
        b = cls(name="b", items=["x"])
        return [
            str(inspect.signature(cls)),
            repr(a),
            a == b,
            cls.__hash__,
            dataclasses.replace(a, name="c").name,
            cls("z").items == [],
        ]

    assert observe(_plain_pair(make)) == observe(_plain_pair(dataclasses.dataclass))


def test_a_self_referencing_repr_is_cut_as_dataclasses_does() -> None:
    def cyclic(make: Callable[[type], type]) -> str:
        class Node:
            """A node."""

            children: list[Any]

        node = make(Node)([])
        node.children.append(node)
        return repr(node)

    assert cyclic(record) == cyclic(dataclasses.dataclass)


def test_unsupported_forms_are_refused() -> None:
    class NoDoc:
        x: int

    with pytest.raises(TypeError):
        record(NoDoc)

    class KwOnly:
        """Keyword only."""

        x: int = dataclasses.field(kw_only=True)

    with pytest.raises(TypeError):
        record(KwOnly)


def test_the_types_are_frozen_dataclasses_with_their_methods() -> None:
    config = types.Config(
        path=None, root=Path("."), env=None, settings={}, database={}, migrations_dir=Path("m")
    )
    assert config.source == {} and config.lock_id == types.DEFAULT_LOCK_ID
    changed = dataclasses.replace(config, env="prod")
    assert changed.env == "prod" and changed != config
    assert changed == dataclasses.replace(config, env="prod")
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.env = "x"  # type: ignore[misc]
    assert repr(types.Statement("SELECT 1", 3)) == "Statement(text='SELECT 1', line=3)"
    assert hash(types.Statement("SELECT 1", 3)) == hash(("SELECT 1", 3))
    assert pickle.loads(pickle.dumps(changed)) == changed
    for value in vars(types).values():
        ours = isinstance(value, type) and value.__module__ == types.__name__
        if ours and dataclasses.is_dataclass(value):
            assert value.__dataclass_params__.frozen, value  # type: ignore[attr-defined]
