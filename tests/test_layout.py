"""The package's plan (docs/design.md, Module map): layers that import one way, no import
circles (imports inside functions count), small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ase_bodyorder"

#: the layers of docs/design.md's module map, lowest first: a module may import its own
#: layer and those below, never one above
LAYERS = [
    {"errors", "torch_compat"},
    {"models", "expansion", "h5md", "fci", "truncated_model"},
    {"backends.base", "backends.packing"},
    {"backends.ase_calculator", "backends.metatomic", "backends.sevennet", "backends.mace", "backends.chgnet",
     "backends.callable", "reference"},
    {"backends.select", "backends"},
    {"backends.dask", "checks", "mbe", "loading", "export", "linear.descriptors"},
    {"linear.model"},
    {"calculator"},
    {"decomposition", "md", "report", "linear.fit", "linear"},
    {"distributed", "analysis", "compare", "ipi_driver"},
    {"ipi", "ipi_bodyorder"},
    {"cli.common"},
    {"cli.md", "cli.decompose", "cli.curves", "cli.compare", "cli.export", "cli.fit", "cli.info", "cli.ipi"},
    {"cli", "cli.__main__"},
]


def _modules() -> dict[str, Path]:
    """Module names relative to the package ('' for the package itself)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports anywhere in its code (inside functions
    too), each as the longest module name that the import names."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                base = [p for p in base if p]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
                names = ["ase_bodyorder" + ("." + module if module else "")]
            else:
                names = [node.module or ""]
            names += [f"{names[0]}.{alias.name}" for alias in node.names]
        else:
            continue
        for full in names:
            if full != "ase_bodyorder" and not full.startswith("ase_bodyorder."):
                continue
            local = full[len("ase_bodyorder."):] if full != "ase_bodyorder" else ""
            while local and local not in modules:
                local = local.rpartition(".")[0]
            if local and local != name:
                targets.add(local)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items() if name}


def test_the_import_graph_is_read_right():
    """The reader finds relative, absolute and lazy imports (a check of the check)."""
    graph = _graph()
    assert "calculator" in graph["decomposition"]  # from .calculator import ...
    assert "backends.dask" in graph["calculator"]  # lazy, inside __init__
    assert "calculator" in graph["ipi_driver"]  # from ase_bodyorder.calculator, inside a method
    assert "backends.base" in graph["backends.select"]  # from .base, inside a subpackage
    assert "errors" in graph["backends.select"]  # from ..errors


def test_no_import_circles():
    graph = _graph()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    circles = sorted({tuple(sorted(m for m in reachable(name) if name in reachable(m)))
                      for name in graph if name in reachable(name)})
    assert not circles, f"import circles (lazy imports count): {circles}"


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = _graph()
    layer = {module: i for i, names in enumerate(LAYERS) for module in names}
    assert set(graph) <= set(layer), f"modules missing from LAYERS: {sorted(set(graph) - set(layer))}"
    upward = [(module, target) for module, targets in graph.items() for target in targets
              if layer[target] > layer[module]]
    assert not upward, f"lower layers import higher ones: {upward}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= 600, f"{path.name} has {len(lines)} lines: split it by job"
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 120, f"{path.name}: {node.name} has {length} lines: split it into named steps"
