"""``dataclass`` for the classes every ``mg`` start creates, without compiling code at import.

``dataclasses.dataclass`` writes each method it adds as source text and compiles it with
``exec``: six methods for a frozen class, about 1 ms per class, which at every start (``mg
--help`` included) cost more than all of click. ``record`` makes the same class: it lets
``dataclasses`` collect the fields (so ``fields``, ``replace``, ``asdict``, ``is_dataclass``
and subclassing work as for any dataclass), then adds ``__repr__``, ``__eq__``, ``__hash__``
and, when frozen, ``__setattr__``/``__delattr__`` as closures over the field names, with the
results of the generated ones. Only ``__init__`` is compiled, the way ``dataclasses`` does,
the first time the class is instantiated (so a class a command never builds costs nothing);
until then ``inspect.signature`` reads the signature the placeholder carries.

Supported: plain fields with a default or a ``default_factory``, ``repr``/``compare``/
``hash`` per field, ``__post_init__``, ``frozen``. Anything else (``kw_only``, ``InitVar``,
``ClassVar``, ``init=False`` fields, ``order``, ``slots``, dataclass bases) is refused with
``TypeError``: use ``dataclasses.dataclass`` for those. ``tests/test_records.py`` checks the
behaviour against ``dataclasses.dataclass`` itself.
"""

from __future__ import annotations

import _thread
import dataclasses
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**kwargs: Any) -> Callable[[Any], Any]:
        return lambda function: function


_T = TypeVar("_T", bound=type)

# What a field with a default_factory shows as its default in the signature, as in
# dataclasses (where it is the private ``_HAS_DEFAULT_FACTORY``).
_FACTORY: Any = getattr(dataclasses, "_HAS_DEFAULT_FACTORY", None)
if _FACTORY is None:  # pragma: no cover - every supported Python has it

    class _Factory:
        def __repr__(self) -> str:
            return "<factory>"

    _FACTORY = _Factory()


@overload
@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def record(cls: _T, /) -> _T: ...
@overload
def record(*, frozen: bool = False) -> Callable[[_T], _T]: ...


def record(cls: Any = None, /, *, frozen: bool = False) -> Any:
    """``@dataclass`` / ``@dataclass(frozen=True)`` with the same result (see the module)."""

    def wrap(cls: _T) -> _T:
        return _make(cls, frozen)

    return wrap if cls is None else wrap(cls)


def _make(cls: _T, frozen: bool) -> _T:
    if hasattr(cls, "__dataclass_fields__"):
        raise TypeError(f"{cls.__qualname__}: record does not take dataclass bases")
    if not cls.__doc__:
        # dataclasses would write the signature into __doc__; ours are all documented.
        raise TypeError(f"{cls.__qualname__}: a record needs a docstring")
    if frozen and ("__setattr__" in cls.__dict__ or "__delattr__" in cls.__dict__):
        raise TypeError(f"{cls.__qualname__}: a frozen record cannot define __setattr__")
    body_hash = cls.__dict__.get("__hash__", _FACTORY)
    explicit_hash = body_hash is not _FACTORY and not (
        body_hash is None and "__eq__" in cls.__dict__
    )
    dataclasses.dataclass(init=False, repr=False, eq=False)(cls)
    fields = dataclasses.fields(cls)
    if len(fields) != len(cls.__dataclass_fields__):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__qualname__}: record does not take ClassVar or InitVar")
    for f in fields:
        if not f.init or getattr(f, "kw_only", False):
            raise TypeError(f"{cls.__qualname__}.{f.name}: record takes only plain fields")

    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    params.init = params.repr = params.eq = True
    params.frozen = frozen

    _add(cls, "__init__", _placeholder_init(cls, fields, frozen))
    _add(cls, "__repr__", _repr(cls, tuple(f.name for f in fields if f.repr)))
    compared = tuple(f.name for f in fields if f.compare)
    _add(cls, "__eq__", _eq(cls, compared))
    if not explicit_hash:
        if frozen:
            hashed = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
            _put(cls, "__hash__", _hash(cls, hashed))
        else:
            _put(cls, "__hash__", None)
    if frozen:
        names = frozenset(f.name for f in fields)
        _put(cls, "__setattr__", _frozen_setattr(cls, names))
        _put(cls, "__delattr__", _frozen_delattr(cls, names))
    return cls


def _put(cls: type, name: str, value: Any) -> None:
    setattr(cls, name, value)


def _add(cls: type, name: str, function: Callable[..., Any]) -> None:
    if name not in cls.__dict__:
        function.__qualname__ = f"{cls.__qualname__}.{name}"
        function.__name__ = name
        function.__module__ = cls.__module__
        setattr(cls, name, function)


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """``lambda o: (o.a, o.b, ...)``, a tuple whatever the number of names."""
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    if not names:
        return lambda obj: ()
    return attrgetter(*names)


def _repr(cls: type, names: tuple[str, ...]) -> Callable[[Any], str]:
    running: set[tuple[int, int]] = set()

    def __repr__(self: Any) -> str:
        key = id(self), _thread.get_ident()
        if key in running:
            return "..."
        running.add(key)
        try:
            inner = ", ".join([f"{name}={getattr(self, name)!r}" for name in names])
        finally:
            running.discard(key)
        return f"{self.__class__.__qualname__}({inner})"

    return __repr__


def _eq(cls: type, names: tuple[str, ...]) -> Callable[[Any, object], Any]:
    values = _getter(names)

    def __eq__(self: Any, other: object) -> Any:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    return __eq__


def _hash(cls: type, names: tuple[str, ...]) -> Callable[[Any], int]:
    values = _getter(names)

    def __hash__(self: Any) -> int:
        return hash(values(self))

    __hash__.__qualname__ = f"{cls.__qualname__}.__hash__"
    return __hash__


def _frozen_setattr(cls: Any, names: frozenset[str]) -> Callable[[Any, str, Any], None]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    __setattr__.__qualname__ = f"{cls.__qualname__}.__setattr__"
    return __setattr__


def _frozen_delattr(cls: Any, names: frozenset[str]) -> Callable[[Any, str], None]:
    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    __delattr__.__qualname__ = f"{cls.__qualname__}.__delattr__"
    return __delattr__


# How many times a record's __init__ binds its arguments itself before the real one is
# compiled: a class built a few times (most, at start-up) never pays for compiling.
_UNCOMPILED_CALLS = 32


class _Init:
    """A record's ``__init__`` until the real one is compiled (see ``_placeholder_init``)."""

    def __init__(self, cls: type, fields: tuple[dataclasses.Field[Any], ...], frozen: bool):
        self.cls = cls
        self.fields = fields
        self.frozen = frozen
        self.names = tuple(f.name for f in fields)
        self.known = frozenset(self.names)
        self.required = tuple(
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        self.defaults = tuple(
            (f.name, f.default, f.default_factory) for f in fields if f.name not in self.required
        )
        self.post_init = hasattr(cls, "__post_init__")
        self.calls = 0
        self.placeholder: Callable[..., None] | None = None

    def install(self) -> Callable[..., None]:
        """The real ``__init__``, compiled and put on the class the first time."""
        current = self.cls.__dict__["__init__"]
        if current is not self.placeholder:
            real: Callable[..., None] = current
            return real
        real = _compile_init(self.cls, self.fields, self.frozen)
        _put(self.cls, "__init__", real)
        return real

    def bind(self, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Set the fields as the real ``__init__`` would; False, having done nothing, when the
        arguments do not fit (the real one then raises its own error)."""
        names = self.names
        if len(args) > len(names):
            return False
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name in values or name not in self.known:
                return False
            values[name] = value
        for name in self.required:
            if name not in values:
                return False
        for name, default, factory in self.defaults:
            if name not in values:
                values[name] = default if factory is dataclasses.MISSING else factory()
        setter = object.__setattr__ if self.frozen else setattr
        for name in names:
            setter(obj, name, values[name])
        if self.post_init:
            obj.__post_init__()
        return True


class _Signature:
    """``cls.__signature__``: compiles the real ``__init__`` when ``inspect.signature`` asks,
    and answers None so that it reads the signature from that ``__init__`` as usual."""

    def __init__(self, init: _Init) -> None:
        self.init = init

    def __get__(self, instance: object, owner: type | None = None) -> None:
        self.init.install()


def _placeholder_init(
    cls: type, fields: tuple[dataclasses.Field[Any], ...], frozen: bool
) -> Callable[..., None]:
    """An ``__init__`` that binds its arguments itself for its first ``_UNCOMPILED_CALLS``
    calls, then compiles the real one, installs it on ``cls`` and calls it."""
    state = _Init(cls, fields, frozen)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if state.calls < _UNCOMPILED_CALLS:
            state.calls += 1
            if state.bind(self, args, kwargs):
                return
        state.install()(self, *args, **kwargs)

    state.placeholder = __init__
    _put(cls, "__signature__", _Signature(state))
    return __init__


def _compile_init(
    cls: type, fields: tuple[dataclasses.Field[Any], ...], frozen: bool
) -> Callable[..., None]:
    """The ``__init__`` ``dataclasses`` would have generated (for the supported fields)."""
    namespace: dict[str, Any] = {"__factory": _FACTORY, "__object_setattr": object.__setattr__}
    parameters = ["self"]
    lines = []
    for f in fields:
        name = f.name
        if f.default is not dataclasses.MISSING:
            namespace[f"__dflt_{name}"] = f.default
            parameters.append(f"{name}=__dflt_{name}")
            value = name
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"__dflt_{name}"] = f.default_factory
            parameters.append(f"{name}=__factory")
            value = f"__dflt_{name}() if {name} is __factory else {name}"
        else:
            parameters.append(name)
            value = name
        if frozen:
            lines.append(f"    __object_setattr(self, {name!r}, {value})")
        else:
            lines.append(f"    self.{name} = {value}")
    if hasattr(cls, "__post_init__"):
        lines.append("    self.__post_init__()")
    if not lines:
        lines.append("    pass")
    source = f"def __init__({', '.join(parameters)}) -> None:\n" + "\n".join(lines) + "\n"
    exec(source, namespace)  # what dataclasses does, once per class
    function: Callable[..., None] = namespace["__init__"]
    function.__qualname__ = f"{cls.__qualname__}.__init__"
    function.__module__ = cls.__module__
    function.__annotations__ = {f.name: f.type for f in fields} | {"return": None}
    return function
