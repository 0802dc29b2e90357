"""The package's layers: every module imports, no module imports a higher layer, no import circles.

Read from the source with ``ast`` (imports inside functions count too), so a
circle hidden behind a lazy import is caught as well.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import bertcurve

SRC = Path(bertcurve.__file__).parent

# Lower number = lower layer. A module may import its own layer and the layers below.
LAYERS = {
    "bertcurve": 0, "bertcurve.errors": 0, "bertcurve.fsutil": 0, "bertcurve.layout": 0,
    "bertcurve.progress": 0,
    "bertcurve.curves": 1,
    "bertcurve.data": 2, "bertcurve.viz": 2,
    "bertcurve.training": 3,
    "bertcurve.inference": 4,
    # schedule-aware forecasts and sweep pruning: built on curves and training, used by stages
    "bertcurve.what_if": 4, "bertcurve.tuning": 4,
    "bertcurve.stages": 5,
    "bertcurve.cli": 6, "bertcurve.__main__": 6,
}


def _modules() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


MODULES = _modules()


def layer_of(module: str) -> int:
    """The layer of a module: that of its longest listed prefix (the package itself only by name)."""
    best = max((p for p in LAYERS if module == p or (module.startswith(p + ".") and p != "bertcurve")),
               key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} has no layer; add its package to LAYERS in this test")
    return LAYERS[best]


def imports_of(module: str) -> set[str]:
    """The bertcurve modules ``module`` imports anywhere in its source."""
    path = SRC.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bertcurve"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "bertcurve":
                continue
            for alias in node.names:  # `from bertcurve import layout` imports a module
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return found - {module}


def test_every_module_has_a_layer_and_imports():
    assert "bertcurve.training.config" in MODULES and "bertcurve.stages.study" in MODULES
    for name in MODULES:
        layer_of(name)
        if name != "bertcurve.__main__":  # importing it runs the CLI
            importlib.import_module(name)


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_higher_layer(module):
    if module == "bertcurve":
        return  # the package's lazy public API names stage functions by string only
    mine = layer_of(module)
    higher = sorted(m for m in imports_of(module) if layer_of(m) > mine)
    assert not higher, f"{module} (layer {mine}) imports higher layers: {higher}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (one per back edge)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_circles():
    graph = {m: imports_of(m) for m in MODULES if m != "bertcurve"}
    cycles = _cycles(graph)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_circle_check_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_stages_share_study_names_through_layout():
    # plot, report and dashboard resolve a study folder without importing the study stage
    for stage in ("plot", "report", "dashboard"):
        assert "bertcurve.stages.study" not in imports_of(f"bertcurve.stages.{stage}"), stage

