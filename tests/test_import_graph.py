"""The import directions of CONTRIBUTING.md ("Where things go") hold, and nothing in ``app``
imports itself back: the contracts in ``pyproject.toml`` (``[tool.importlinter]``, also run by
``make lint``), plus a module-level cycle search that names the modules of any cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
#: The CLI imports each subcommand's modules when it runs, so `realname --help` starts fast.
LAZY_IMPORTS_ALLOWED = {APP / "cli.py"}


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan, iterative)."""

    def imported(module: str) -> Iterator[str]:
        return iter(sorted(graph.find_modules_directly_imported_by(module)))

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)

    for root in sorted(graph.modules):
        if root in index:
            continue
        visit(root)
        work = [(root, imported(root))]
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    visit(child)
                    work.append((child, imported(child)))
                elif child in stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = stack[stack.index(module) :]
                del stack[stack.index(module) :]
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _imports_app(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "app" and node.level == 0
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "app" for alias in node.names)
    return False


def test_import_contracts_hold() -> None:
    """Every import-linter contract in pyproject.toml is kept (layers, no cycles, no database)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"

    run = subprocess.run(
        [str(lint_imports), "--no-logo", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr


def test_no_module_imports_itself_back() -> None:
    """No import cycle among the modules of app, whether the imports are at the top or inside
    functions or under TYPE_CHECKING."""
    graph = grimp.build_graph("app", include_external_packages=False)

    cycles = _cycles(graph)

    assert cycles == [], f"import cycles: {cycles}"


def test_app_imports_sit_at_module_level() -> None:
    """An import of an app module inside a function hides a dependency (and, often, a cycle):
    only the CLI imports lazily."""
    hidden = []
    for path in sorted(APP.rglob("*.py")):
        if path in LAZY_IMPORTS_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                hidden += [
                    f"{path.relative_to(ROOT)}:{inner.lineno}"
                    for inner in ast.walk(node)
                    if _imports_app(inner)
                ]

    assert hidden == [], f"app imports inside functions: {hidden}"
