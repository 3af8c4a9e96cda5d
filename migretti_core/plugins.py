"""The plugin manager and its fixed load order.

Order (later registrations run first, so they override earlier ones):

1. builtins, each under a short name (``migretti_plugins``);
2. installed packages exposing the ``migretti`` entry-point group, sorted by name;
3. ``-p MODULE`` options and ``MG_PLUGINS`` (comma-separated);
4. ``plugins:`` from mg.yaml (module names or ``.py`` paths relative to mg.yaml).

``-p no:NAME`` and ``MG_DISABLE_PLUGINS`` block a plugin before it is imported. A third-party
plugin that fails to load is reported and skipped (``MG_STRICT_PLUGINS=1`` makes it fatal
for every other command), so ``mg --help`` and ``mg plugins`` keep working.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import field
from types import FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from migretti_core import PROJECT_NAME, hookspecs
from migretti_core.errors import PluginError
from migretti_core.messages import emit
from migretti_core.records import record

if TYPE_CHECKING:
    from pathlib import Path

ENTRY_POINT_GROUP = "migretti"
_IMPL_ATTR = f"{PROJECT_NAME}_impl"  # where pluggy's HookimplMarker keeps its options


class Builtin(NamedTuple):
    """A builtin plugin: its name, its module, and its mg.yaml keys not named after it.

    ``keys`` are top-level mg.yaml keys the builtin owns under another name (``seeds_dir``
    of ``seeds``). A plugin declares its keys itself (``mg_config_sections``), but a blocked
    builtin is never imported and cannot be asked: this list is how its keys are still
    recognised and ignored with a warning instead of stopping every command as unknown.
    A test checks it against what each builtin declares.
    """

    name: str
    module: str
    keys: tuple[str, ...] = ()


BUILTINS: tuple[Builtin, ...] = (
    Builtin("config", "migretti_plugins.config"),
    Builtin("files", "migretti_plugins.files"),
    Builtin("split", "migretti_plugins.split"),
    Builtin("postgres", "migretti_plugins.postgres"),
    Builtin("lock", "migretti_plugins.lock"),
    Builtin("history", "migretti_plugins.history"),
    Builtin("dryrun", "migretti_plugins.dryrun"),
    Builtin("shellhooks", "migretti_plugins.shellhooks", ("hook_timeout", "hooks")),
    Builtin("protect", "migretti_plugins.protect", ("protected",)),
    Builtin("output", "migretti_plugins.output"),
    Builtin("jsonlog", "migretti_plugins.jsonlog"),
    Builtin("seeds", "migretti_plugins.seeds", ("seeds_dir",)),
    Builtin("squash", "migretti_plugins.squash"),
    Builtin("embedded", "migretti_plugins.embedded"),
    Builtin("check", "migretti_plugins.check"),
    Builtin("baseline", "migretti_plugins.baseline"),
    Builtin("lint", "migretti_plugins.lint"),
    Builtin("schema", "migretti_plugins.schema", ("schema_file",)),
    Builtin("fleet", "migretti_plugins.fleet", ("fleets",)),
)
BUILTIN_KEYS: dict[str, tuple[str, ...]] = {b.name: b.keys for b in BUILTINS if b.keys}

ORIGIN_BUILTIN = "builtin"
ORIGIN_ENTRY_POINT = "entry point"
ORIGIN_OPTION = "command line"
ORIGIN_CONFIG = "config"


@record
class PluginInfo:
    """One plugin as ``mg plugins`` shows it."""

    name: str
    origin: str
    source: str
    version: str | None = None
    status: str = "loaded"
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    dist: Any = field(default=None, repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        """The listing of ``mg plugins``; reads an entry point's version only now.

        Reading a distribution's version parses its METADATA with the email parser, which
        costs more at startup than importing twenty small plugins.
        """
        version = self.version
        if version is None and self.dist is not None:
            try:
                version = self.dist.version
            except Exception:
                version = None
        return {
            "name": self.name,
            "origin": self.origin,
            "source": self.source,
            "version": version,
            "status": self.status,
            "error": self.error,
            "hooks": list(self.hooks),
        }


class MgPluginManager(pluggy.PluginManager):
    """Which functions are hooks, and who hears about registrations.

    A function marked ``@hookimpl`` is a hook implementation (an unknown name is a load
    error). An unmarked function is one only when its name is exactly a hook's name, so a
    helper such as ``mg_url`` or an import alias ``report as mg_report_event`` stays a helper.
    ``mg_listeners`` are told of every registration (the facade guards new implementations);
    ``mg_trace`` is set with MG_TRACE_PLUGINS.
    """

    mg_trace: bool = False

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.mg_listeners: list[Callable[[object | None], None]] = []

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        if type(plugin) is ModuleType:
            # The common case, answered from the module's namespace: pluggy's lookup
            # (``inspect.getattr_static``) costs more than the rest of registering a module.
            # Anything but a plain function goes the long way, with the same answer.
            value = plugin.__dict__.get(name)
            if type(value) is FunctionType:
                marked = getattr(value, _IMPL_ATTR, None)
                if marked is not None:
                    return marked if isinstance(marked, dict) else None
                return {} if name in self.spec_names() else None
            if not isinstance(value, (staticmethod, classmethod, MethodType)) and (
                name not in self.spec_names()
            ):
                return None
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in self.spec_names() and callable(getattr(plugin, name, None)):
            return {}
        return opts

    def spec_names(self) -> frozenset[str]:
        """The hooks with a specification (``hookspecs`` and any added with add_hookspecs)."""
        names = getattr(self, "_mg_spec_names", None)
        if names is None:
            names = frozenset(
                name
                for name, caller in vars(self.hook).items()
                if name.startswith("mg_") and getattr(caller, "spec", None) is not None
            )
            self._mg_spec_names: frozenset[str] | None = names
        return names

    def add_hookspecs(self, module_or_class: ModuleType | type) -> None:
        super().add_hookspecs(module_or_class)
        self._mg_spec_names = None

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        for listener in self.mg_listeners:
            listener(plugin)
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        for listener in self.mg_listeners:
            listener(None)
        return removed


def parse_name_list(value: str | None) -> list[str]:
    """Split ``a, b,c`` as used by MG_PLUGINS and MG_DISABLE_PLUGINS."""
    if not value:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def is_plugin_path(spec: str) -> bool:
    """Whether a plugin is given as a ``.py`` file (``tools/notify.py``), not a module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def plugin_name(spec: str) -> str:
    """The name a plugin given as ``spec`` is registered under: a file's name without
    ``.py`` (``tools/notify.py`` is ``notify``), else ``spec`` itself."""
    if not is_plugin_path(spec):
        return spec
    import os

    # `tools/` (a folder, refused when loaded) is named `tools`, never ``''``
    base = os.path.basename(spec.replace("\\", "/").rstrip("/"))
    return base[:-3] if base.endswith(".py") else base


class PluginLoader:
    """Registers plugins in the documented order and remembers how each one went."""

    def __init__(
        self,
        *,
        blocked: Iterable[str] = (),
        strict: bool = False,
        warn: Callable[[str], None] | None = None,
        trace: bool = False,
    ) -> None:
        self.pm = MgPluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.pm.mg_trace = trace
        self.blocked = set(blocked)
        for name in self.blocked:
            self.pm.set_blocked(name)
        self.strict = strict
        self.warn = warn or (lambda text: emit("warning", text))
        self.infos: list[PluginInfo] = []
        self.deferred_errors: list[PluginError] = []
        # Installed packages that failed to load in strict mode: fatal for every command but
        # the ones that show what is installed (``App`` decides; SPEC 14).
        self.strict_errors: list[PluginError] = []

    # --- registration ---------------------------------------------------------------------

    def load_builtins(self) -> None:
        """The builtins ship with migretti: their version is migretti's."""
        from migretti_core import __version__

        for name, module_name, _keys in BUILTINS:
            info = PluginInfo(name, ORIGIN_BUILTIN, module_name, version=__version__)
            if name in self.blocked:
                info.status = "blocked"
                self.infos.append(info)
                continue
            module = importlib.import_module(module_name)
            self._register(module, info)

    def load_entry_points(self) -> None:
        from migretti_core.entrypoints import may_have_entry_points

        if not may_have_entry_points(ENTRY_POINT_GROUP):
            return  # nothing declares the group: importlib_metadata is not worth importing
        import importlib_metadata

        eps = sorted(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        seen: set[str] = set()
        for ep in eps:
            if ep.name in seen:
                continue
            seen.add(ep.name)
            info = PluginInfo(ep.name, ORIGIN_ENTRY_POINT, ep.value, dist=ep.dist)
            if ep.name in self.blocked:
                info.status = "blocked"
                self.infos.append(info)
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:
                self._failed(info, exc, fatal=False, strict=self.strict)
                continue
            self._register(plugin, info, fatal=False, strict=self.strict)

    def load_modules(self, specs: Iterable[str], origin: str, base_dir: Path) -> None:
        """Import in-house plugins: module names, or ``.py`` paths relative to ``base_dir``."""

        for spec in specs:
            is_path = is_plugin_path(spec)
            name = plugin_name(spec)
            if name in self.blocked:
                self.infos.append(PluginInfo(name, origin, spec, status="blocked"))
                continue
            info = PluginInfo(name, origin, spec)
            registered = self.pm.get_plugin(name)
            if registered is not None:
                # The same file given twice (MG_PLUGINS and mg.yaml) is loaded once; another
                # plugin under a name already taken would be silently left out.
                wanted = base_dir / spec if is_path else _module_file(base_dir, name)
                taken_by = self._taken_by(name, registered, wanted)
                if taken_by is None:
                    continue
                problem = (
                    f"the name {name!r} is taken by {taken_by}; rename the file "
                    "(a plugin's name is its module or file name)"
                )
                self._failed(
                    info, PluginError(problem), fatal=False, deferred=True, blockable=False
                )
                continue
            try:
                module = (
                    self._import_path(base_dir / spec, name)
                    if is_path
                    else (self._import_module(spec, base_dir))
                )
            except (Exception, SystemExit) as exc:
                self._failed(info, exc, fatal=False, deferred=True)
                continue
            info.version = _version_text(getattr(module, "__version__", None))
            self._register(module, info, deferred=True)

    def _taken_by(self, name: str, registered: object, path: Path | None) -> str | None:
        """Who holds ``name`` when it is not the same file as the one asked for, or None."""
        holder = next((i for i in self.infos if i.name == name and i.status == "loaded"), None)
        if holder is not None and holder.origin == ORIGIN_BUILTIN:
            return f"the builtin plugin {name!r}"
        if sys.modules.get(name) is registered:  # the same module, by its name
            return None
        if path is not None and _same_file(getattr(registered, "__file__", None), path):
            return None
        if holder is None:
            return f"another plugin named {name!r}"
        import os

        # as given (-p other/notify.py), or relative to the working directory: both files
        # have the same name, so the file name alone would not say which holds it
        source = holder.source
        if os.path.isabs(source):
            relative = os.path.relpath(source)
            source = source if relative.startswith("..") else relative
        return f"the plugin from {source}"

    def register_objects(self, plugins: Iterable[tuple[str, object]], origin: str) -> None:
        """Register plugin objects already in hand (a module, a class instance), by name."""
        for name, plugin in plugins:
            if name in self.blocked:
                self.infos.append(PluginInfo(name, origin, repr(plugin), status="blocked"))
                continue
            if self.pm.get_plugin(name) is not None:
                raise PluginError(f"two plugins are named {name!r}; give one another name")
            self._register(plugin, PluginInfo(name, origin, repr(plugin)))

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    def _import_module(name: str, base_dir: Path) -> ModuleType:
        base = str(base_dir)
        if base not in sys.path:
            sys.path.insert(0, base)
        loaded = sys.modules.get(name)
        if loaded is not None and "." not in name:
            # A module of that name is imported already (`typing`, `uuid`...): import would
            # hand that one back, but the file beside mg.yaml (or in the working directory
            # for -p) comes first, as documented.
            local = _module_file(base_dir, name)
            if local is not None and not _same_file(getattr(loaded, "__file__", None), local):
                return PluginLoader._import_path(local, name)
        return importlib.import_module(name)

    @staticmethod
    def _import_path(path: Path, name: str) -> ModuleType:
        import importlib.util
        import os

        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory, not a .py file")
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        # The modules beside it can be imported: an in-house plugin may keep helpers in files
        # of their own. At the end of the path, so a file there named like a module of
        # Python or of an installed package (tools/email.py) never takes its place.
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in sys.path:
            sys.path.append(folder)
        module_name = f"_mg_plugin_{name}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        return module

    def _register(
        self,
        plugin: object,
        info: PluginInfo,
        *,
        fatal: bool = True,
        deferred: bool = False,
        strict: bool = False,
    ) -> None:
        # The builtins' hooks are checked by the test suite (test_builtins_pass_hook_checks),
        # not at every start: the check looks at every attribute of every module.
        problem = None if info.origin == ORIGIN_BUILTIN else self._check_hooks(plugin, info.name)
        if problem is None:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    self.pm.register(plugin, name=info.name)
            except ValueError as exc:
                problem = str(exc)
            except pluggy.PluginValidationError as exc:
                problem = " ".join(str(exc).split())
            else:
                for warning in caught:
                    self.warn(f"plugin {info.name!r}: {warning.message}")
        if problem is not None:
            self._failed(
                info,
                PluginError(problem),
                fatal=fatal and not deferred,
                deferred=deferred,
                strict=strict,
            )
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ())
        self.infos.append(info)

    def _check_hooks(self, plugin: object, name: str) -> str | None:
        """One line per mistake: an unknown marked hook, a wrong argument name.

        An unmarked near miss (``mg_after_aply``) is only a warning: it may be a helper.
        """
        known = self.pm.spec_names()
        ordered = sorted(known)
        for attr in dir(plugin):
            try:
                function = getattr(plugin, attr)
            except Exception:
                continue
            if not callable(function):
                continue
            opts = self.pm.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                if attr.startswith("mg_"):
                    close = _close_matches(attr, ordered, cutoff=0.85)
                    if close:
                        self.warn(
                            f"plugin {name!r}: {attr} is not a hook and is not marked "
                            f"@hookimpl, so it is ignored (did you mean {close[0]}?)"
                        )
                continue
            hook = opts.get("specname") or attr
            if hook not in known and opts.get("optionalhook"):
                # pluggy's optionalhook=True: a hook of a later migretti, never called here
                continue
            if hook not in known:
                close = _close_matches(hook, ordered)
                hint = f" (did you mean {close[0]}?)" if close else ""
                return f"unknown hook {hook}{hint}"
            problem = _argument_problem(function, hook, getattr(self.pm.hook, hook).spec.argnames)
            if problem is not None:
                return problem
        return None

    def _failed(
        self,
        info: PluginInfo,
        exc: BaseException,
        *,
        fatal: bool,
        deferred: bool = False,
        blockable: bool = True,
        strict: bool = False,
    ) -> None:
        from migretti_core.redact import redact_text

        reason = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
        # Kept for ``mg plugins`` and the Python API: an import error may quote a URL.
        reason = redact_text(reason)
        info.status = "failed"
        info.error = reason
        self.infos.append(info)
        from migretti_core.messages import printable

        # on one line: a line break in the plugin's text would start a line of mg's output
        text = (
            f"plugin {info.name!r} ({info.origin}: {info.source}) failed to load: "
            f"{printable(reason)}"
        )
        if blockable:  # not when the name is another plugin's too: that would block both
            text += f"; disable it with -p no:{info.name} or MG_DISABLE_PLUGINS={info.name}"
        if fatal:
            raise PluginError(text)
        if strict:
            self.strict_errors.append(PluginError(text))
            return
        if deferred:
            self.deferred_errors.append(PluginError(text))
            return
        self.warn(text)


def _module_file(directory: Path, name: str) -> Path | None:
    """``directory/name.py``, or the package ``directory/name/__init__.py``, if there."""
    for path in (directory / f"{name}.py", directory / name / "__init__.py"):
        if path.is_file():
            return path
    return None


def _same_file(file: str | None, path: Path) -> bool:
    import os

    try:
        return file is not None and os.path.samefile(file, path)
    except OSError:
        return False


def _version_text(value: object) -> str | None:
    """A module's ``__version__`` as text: ``(1, 2)`` is ``1.2``, ``3`` is ``3``."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return ".".join(str(part) for part in value)
    return str(value)


def _close_matches(word: str, choices: Sequence[str], cutoff: float = 0.6) -> list[str]:
    """The nearest of ``choices``; difflib is imported only once a name is wrong."""
    import difflib

    return difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)


def _argument_problem(
    function: Callable[..., Any], hook: str, accepted: Sequence[str]
) -> str | None:
    """``mg_after_apply takes no argument 'reslts' (did you mean 'results'?)``, or None."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    wanted = [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    for arg in wanted:
        if arg not in accepted:
            close = _close_matches(arg, accepted)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            offered = ", ".join(accepted) or "none"
            return f"{hook} takes no argument {arg!r}{guess}; it offers: {offered}"
    return None
