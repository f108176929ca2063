"""The package layers of docs/architecture.md, kept true: no import cycle between tumorlab's modules and no
import from a higher layer, function-level (lazy) imports included.

errors, links < models, data, synth < tasks < training, runs < evaluation, compression < cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "tumorlab"
# top-level part of the package -> its layer (bigger is higher); a module may import its own layer or below
LAYERS = {
    "errors": 0,
    "links": 0,
    "models": 1,
    "data": 1,
    "synth": 1,
    "tasks": 2,
    "training": 3,
    "runs": 3,
    "evaluation": 4,
    "compression": 4,
    "cli": 5,
    "__main__": 6,
}
ROOT_MODULES = {"__init__.py", "__main__.py", "errors.py", "links.py"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, package: Path = PACKAGE) -> set[str]:
    """The tumorlab modules ``path`` imports anywhere in it (module level or inside a function), as module names:
    ``from tumorlab.x import y`` counts as ``tumorlab.x.y`` where ``y`` is a module, else ``tumorlab.x``."""
    name = module_name(path, package)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    root = package.name
    return {m for m in found if (m == root or m.startswith(root + ".")) and _exists(m, package)}


def _exists(module: str, package: Path) -> bool:
    path = package.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (importing ``a.b.c`` also runs ``a`` and ``a.b``, which are
    left out: a package's ``__init__`` is checked on its own)."""
    graph = {}
    for path in sorted(package.rglob("*.py")):
        name = module_name(path, package)
        graph[name] = imports_of(path, package) - {package.name, name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, targets in graph.items()
        for b in targets
        if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)
    )


def test_every_part_of_the_package_has_a_layer():
    parts = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    parts -= {"__init__"}
    assert parts - set(LAYERS) == set()


def test_the_package_root_holds_at_most_four_modules():
    assert {p.name for p in PACKAGE.glob("*.py")} <= ROOT_MODULES


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_no_module_imports_a_higher_layer():
    assert upward_imports(import_graph()) == []


def test_the_check_sees_lazy_relative_and_from_imports(tmp_path):
    pkg = tmp_path / "tumorlab"
    for sub in ("models", "cli"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "main.py").write_text("")
    (pkg / "models" / "a.py").write_text("def f():\n    from tumorlab.cli import main\n    return main\n")
    (pkg / "models" / "b.py").write_text("from . import a\n")
    graph = import_graph(pkg)
    assert graph["tumorlab.models.a"] == {"tumorlab.cli", "tumorlab.cli.main"}
    assert graph["tumorlab.models.b"] == {"tumorlab.models", "tumorlab.models.a"}
    assert upward_imports(graph)[0].startswith("tumorlab.models.a (layer 1) imports tumorlab.cli")


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_the_cycle_finder(graph, cycle):
    assert find_cycle(graph) == cycle
