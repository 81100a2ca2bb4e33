"""The package layout is a contract: imports go one way (tasks -> ... -> utils) and no module cycle exists,
not even one dodged by an import inside a function. See docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

SRC = ROOT / "src"
# Higher layers may import lower ones, never the other way round nor sideways between packages of one layer.
LAYERS = {
    "utils": 0,
    "resume": 1,
    "distributed": 1,
    "feeding": 2,
    "data": 3,
    "models": 3,
    "callbacks": 4,
    "deploy": 4,  # export, deployed files, calibration: built on models and data
    "evaluation": 5,  # metrics, calibration report and pictures of eval.py (uses deploy.calibrate)
    "extras": 5,
    "cli": 5,  # the entry factory and task wrapper: used by tasks, never importing them (tasks load by name)
    "tasks": 6,
    "bench": 7,  # the `python -m imgcls.bench|eda|shards|gpu_check` entry modules
    "eda": 7,
    "shards": 7,
    "gpu_check": 7,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / "imgcls").rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every imgcls module `path` imports, at any depth (a function-level import counts as much as any)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {n for n in names if n in modules and n.startswith("imgcls")}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    if len(parts) == 1:
        return "imgcls", -1  # the root package: paths and offline defaults, importable by anyone
    return parts[1], LAYERS[parts[1]]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of modules, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_package_has_a_layer():
    packages = {_layer(m)[0] for m in _modules() if m.count(".") >= 1}
    assert packages <= set(LAYERS) | {"imgcls"}, f"new package(s) {packages - set(LAYERS)}: give them a layer"


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_only_go_down_the_layers():
    wrong = []
    for module, imported in _graph().items():
        (pkg, layer) = _layer(module)
        for other in imported:
            other_pkg, other_layer = _layer(other)
            if other_pkg != pkg and other_layer >= layer:
                wrong.append(f"{module} ({pkg}) imports {other} ({other_pkg})")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(sorted(wrong))


def test_the_checks_see_cycles_and_upward_imports():
    """The test's own machinery: a made-up graph with a cycle is caught, an acyclic one passes."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _layer("imgcls.utils.io") == ("utils", 0) and _layer("imgcls.tasks.train")[1] > _layer("imgcls.data.x")[1]
