"""The package layers of STYLE.md: the libraries (data, models, tasks, evaluation, compression) never import
the command line (cli, lightning_cli, commands), so they can be used from Python without it."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

CLI = ("tumorlab.cli", "tumorlab.lightning_cli", "tumorlab.commands", "tumorlab.run_config")
LIBRARIES = ("data", "models", "tasks", "evaluation", "compression")


def _imports(path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):  # function-level (lazy) imports count too
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", LIBRARIES)
def test_library_packages_never_import_the_cli(package):
    files = sorted((REPO / "tumorlab" / package).rglob("*.py"))
    assert files
    offending = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in files
        for name in _imports(path)
        if any(name == cli or name.startswith(cli + ".") for cli in CLI)
    ]
    assert offending == []


def test_the_check_sees_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tumorlab.cli import main\n    return main\n")
    assert _imports(module) == ["tumorlab.cli"]
