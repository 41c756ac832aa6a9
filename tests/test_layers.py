"""The package's layers run one way (docs/architecture.md): a module imports only from its own layer's package or
from layers below, and no modules import each other in a circle. Every import counts, also those inside functions
and under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import convoplan

LAYERS = (
    "atomic",
    "configs",
    "imports",
    "distributed",
    "progress",
    "report",
    "checkpoint",
    "schema",
    "corpora",
    "embed",
    "retrieval",
    "compose",
    "dm",
    "actions",
    "ope",
    "lm",
    "sim",
    "worlds",
    "serve",
    "cli",
)
"""Top-level modules and packages of convoplan, lowest first (the order docs/architecture.md gives)."""

PACKAGE = Path(convoplan.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str) -> set[str]:
    """The convoplan modules that `path`, the module `name`, imports (`from a.b import c` counts as a.b.c where that
    is a module, else a.b)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {module for module in found if module.startswith("convoplan.") or module == "convoplan"}


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}
GRAPH = {
    module_name(path): imported(path, module_name(path)) - {module_name(path)} for path in sorted(PACKAGE.rglob("*.py"))
}


def layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else module
    if top == "convoplan":
        return len(LAYERS)  # the package's own __init__ re-exports from below
    if top not in LAYERS:
        pytest.fail(f"{module}: {top} has no place in LAYERS (add it to the order and to docs/architecture.md)")
    return LAYERS.index(top)


def test_every_top_level_module_has_a_layer() -> None:
    tops = {module.split(".")[1] for module in MODULES if module.count(".")}
    assert tops == set(LAYERS)


def test_no_module_imports_from_a_layer_above_it() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert upward == []


def test_no_module_imports_the_package_root() -> None:
    assert [module for module, targets in GRAPH.items() if "convoplan" in targets] == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for target in GRAPH.get(module, ()):
                if target == start:
                    return [*path, start]
                if target not in seen and target in GRAPH:
                    seen.add(target)
                    stack.append((target, [*path, target]))
        return None

    circles = [" -> ".join(c) for module in GRAPH if (c := cycle_from(module)) is not None]
    assert circles == []


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    """The parser counts imports inside functions and relative ones, so the tests above can fail."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from convoplan.sim.run import World\n    from ..schema import Turn\n")
    found = imported(probe, "convoplan.dm.probe")
    assert found == {"convoplan.sim.run", "convoplan.schema"}
    assert [target for target in found if layer(target) > layer("convoplan.dm.probe")] == ["convoplan.sim.run"]
