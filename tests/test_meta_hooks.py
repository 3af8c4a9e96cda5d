"""Hooks, their documentation and their tests stay in step.

Every hook specification needs a section in docs/plugins/hooks.md headed with its name,
showing its exact signature and saying whether the first result wins, and a test function
``test_hook_<name>`` somewhere under tests/.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from pathlib import Path

import pytest

from migretti_core import hookspecs

REPO = Path(__file__).resolve().parents[1]
HOOKS_DOC = REPO / "docs" / "plugins" / "hooks.md"
SPEC_NAMES = sorted(name for name in dir(hookspecs) if name.startswith("mg_"))


def signature(name: str) -> str:
    """The specification as one line of Python, annotations as written in hookspecs.py."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"def {name}({params}) -> {sig.return_annotation}"


def is_firstresult(name: str) -> bool:
    return bool(getattr(hookspecs, name).migretti_spec["firstresult"])


@functools.cache
def doc_sections() -> dict[str, str]:
    text = HOOKS_DOC.read_text(encoding="utf-8")
    parts = re.split(r"(?m)^### (mg_\w+)\s*$", text)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


@functools.cache
def hook_tests_defined() -> frozenset[str]:
    names: set[str] = set()
    for path in (REPO / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names.update(
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_")
        )
    return frozenset(names)


def test_there_are_hooks_to_check() -> None:
    assert len(SPEC_NAMES) >= 30
    assert signature("mg_lock_acquire") == (
        "def mg_lock_acquire(session: Session, conn: Any, timeout: float) -> bool | None"
    )


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_hook_is_documented_with_its_signature(name: str) -> None:
    sections = doc_sections()
    assert name in sections, f"docs/plugins/hooks.md has no '### {name}' section"
    section = sections[name]
    assert f"```python\n{signature(name)}\n```" in section, (
        f"the {name} section must show its exact signature:\n{signature(name)}"
    )
    calls = [line for line in section.splitlines() if line.startswith("- **Calls**")]
    assert len(calls) == 1, f"the {name} section needs one '- **Calls**' line"
    assert ("first result" in calls[0]) == is_firstresult(name), calls[0]
    assert "every implementation" in calls[0] or is_firstresult(name), calls[0]


def test_no_documented_hook_is_unknown() -> None:
    assert sorted(doc_sections()) == SPEC_NAMES


def test_hook_examples_are_valid_python() -> None:
    text = HOOKS_DOC.read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        if block.startswith("def mg_") and block.count("\n") == 1:
            block = block.rstrip("\n") + ":\n    ...\n"  # a signature line
        ast.parse(block)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_hook_has_a_test(name: str) -> None:
    assert f"test_hook_{name}" in hook_tests_defined(), (
        f"no test function test_hook_{name} under tests/ (see tests/test_plugin_hooks.py)"
    )


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_hook_documents_its_policy_and_version(name: str) -> None:
    from migretti_core.hookpolicy import info_of

    info = info_of(getattr(hookspecs, name))
    assert info.since != "?", f"{name} is not declared with @spec (migretti_core.hookpolicy)"
    policy = [line for line in doc_sections()[name].splitlines() if line.startswith("- **Policy**")]
    assert len(policy) == 1, f"the {name} section needs one '- **Policy**' line"
    words = {"first": "first result", "gate": "gate", "notify": "notification"}
    assert words.get(info.policy.name, info.policy.name) in policy[0]
    assert f"since {info.since}" in policy[0]


def test_every_plugin_variable_is_in_the_plugin_guide() -> None:
    """Loading, blocking, strict mode and tracing: the guide names each variable mg reads."""
    read = set()
    for path in (REPO / "migretti_core").glob("*.py"):
        read.update(re.findall(r"\bMG_[A-Z_]*PLUGINS\b", path.read_text(encoding="utf-8")))
    assert {"MG_PLUGINS", "MG_DISABLE_PLUGINS", "MG_STRICT_PLUGINS"} <= read
    guide = (REPO / "docs" / "plugins" / "README.md").read_text(encoding="utf-8")
    missing = sorted(name for name in read if f"`{name}" not in guide)
    assert not missing, f"docs/plugins/README.md does not explain {', '.join(missing)}"


def test_every_hook_has_a_facade_method_or_the_api_guide_names_the_difference() -> None:
    # session.hooks has one method per hook, named without mg_ and taking the spec's
    # arguments; where it differs, docs/plugins/api.md says how
    from migretti_core.hooks import Hooks

    text = (REPO / "docs" / "plugins" / "api.md").read_text(encoding="utf-8")
    guide = " ".join(text.split())
    for name in SPEC_NAMES:
        short = name.removeprefix("mg_")
        spec_args = list(inspect.signature(getattr(hookspecs, name)).parameters)
        method = getattr(Hooks, short, None)
        if method is None:
            others = [m for m in vars(Hooks) if m.startswith(short)]
            assert any(f"`{name}` is `{m}(" in guide for m in others), name
            continue
        args = [p for p in inspect.signature(method).parameters if p != "self"]
        if args != spec_args:
            assert f"`{short}` takes `({', '.join(args)}" in guide, name
