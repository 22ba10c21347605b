"""The layering rules of the tree, checked on every import statement (lazy ones inside functions too):
production modules never import the tools (`bridge.sim`, `voice.emulators`), and `voice` never imports
`bridge`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support.process import ROOT

TOOLS = ("bridge.sim", "voice.emulators")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def production_modules() -> list[Path]:
    files = sorted([*ROOT.joinpath("bridge").rglob("*.py"), *ROOT.joinpath("voice").rglob("*.py")])
    return [f for f in files if not module_name(f).startswith(TOOLS)]


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("path", production_modules(), ids=module_name)
def test_production_imports_no_tool_and_voice_no_bridge(path: Path) -> None:
    imported = imports_of(path)
    tools = sorted(name for name in imported if any(within(name, tool) for tool in TOOLS))
    assert tools == [], f"{module_name(path)} imports tools: {tools}"
    if within(module_name(path), "voice"):
        bridge = sorted(name for name in imported if within(name, "bridge"))
        assert bridge == [], f"{module_name(path)} (voice) imports bridge: {bridge}"


def test_the_walk_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from bridge.sim.caller import place_call\n", encoding="utf-8")
    assert "bridge.sim.caller" in imports_of(sample)
