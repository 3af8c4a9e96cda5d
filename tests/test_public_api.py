"""The public plugin API: one module, documented, cheap to reach, and what the docs use.

``migretti_core.api`` holds everything a plugin may import; ``migretti_core`` re-exports it
lazily (``mg --help`` does not import it); every name is documented in docs/plugins/api.md;
the guides and examples import only from the public API.
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import migretti_core
from migretti_core import api

REPO = Path(__file__).resolve().parents[1]
API_DOC = REPO / "docs" / "plugins" / "api.md"
PUBLIC = sorted(api.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_documented(name: str) -> None:
    text = API_DOC.read_text(encoding="utf-8")
    assert re.search(rf"`{re.escape(name)}(`|\()", text), (
        f"docs/plugins/api.md does not document `{name}`"
    )


def test_every_public_name_is_reachable_from_the_package() -> None:
    expected = set(api.__all__) - {"__version__", "hookimpl"}
    assert expected == migretti_core._API_NAMES
    for name in api.__all__:
        assert getattr(migretti_core, name) is getattr(api, name)
    with pytest.raises(AttributeError):
        _ = migretti_core.not_a_public_name  # type: ignore[attr-defined]


def test_help_does_not_import_the_public_api() -> None:
    code = (
        "import sys\n"
        "from migretti_core.cli import run\n"
        "code = run(['--help'])\n"
        "print('migretti_core.api' in sys.modules, code)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "False 0"


INTERNAL = re.compile(
    r"migretti_core\.(engine|planning|running|views|reporting|cli|commands|app|plugins|hooks|types|errors|state|settings|"
    r"hookpolicy|hookspecs|messages|durations)\b|from migretti_plugins"
)


@pytest.mark.parametrize(
    "path",
    sorted((REPO / "docs" / "plugins").glob("*.md")) + sorted((REPO / "examples").rglob("*.py")),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_guides_and_examples_use_only_the_public_api(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [m.group(0) for m in INTERNAL.finditer(text)]
    allowed = {"migretti_core.hookspecs"}  # the reference names where specs live
    assert set(found) <= allowed, f"{path.name} reaches into internals: {sorted(set(found))}"


def test_experimental_and_deprecated_hooks_warn_when_implemented() -> None:
    from migretti_core.hookpolicy import NOTIFY, spec
    from migretti_core.plugins import ORIGIN_OPTION, PluginInfo, PluginLoader

    specs = types.ModuleType("more_specs")

    @spec(NOTIFY, since="1.1", experimental="its arguments may still change")
    def mg_try_me() -> None: ...

    @spec(NOTIFY, since="1.0", deprecated="use mg_after_command")
    def mg_old_event() -> None: ...

    specs.mg_try_me = mg_try_me  # type: ignore[attr-defined]
    specs.mg_old_event = mg_old_event  # type: ignore[attr-defined]
    warned: list[str] = []
    loader = PluginLoader(warn=warned.append)
    loader.pm.add_hookspecs(specs)
    user = types.ModuleType("user")
    user.mg_try_me = migretti_core.hookimpl(lambda: None)  # type: ignore[attr-defined]
    user.mg_old_event = migretti_core.hookimpl(lambda: None)  # type: ignore[attr-defined]
    loader._register(user, PluginInfo("user", ORIGIN_OPTION, "user"))
    assert loader.infos[-1].status == "loaded"
    assert sorted(warned) == [
        "plugin 'user': mg_old_event is deprecated (since 1.0): use mg_after_command",
        "plugin 'user': mg_try_me is experimental (since 1.1): its arguments may still change",
    ]
