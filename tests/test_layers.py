"""The import graph of the project's own packages: apps depend one way, and no module cycle.

Every ``.py`` file is parsed with ``ast``, and every import counts, also one inside a function
(it hides a dependency, it does not remove it). The layers, bottom first:

    outbox ← catalog ← annotation ← training ← evaluation

An app imports only from itself and from the apps below it. The pure packages (the training
engine, toyworld) import no Django at all; any app may use them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_LAYERS = ("outbox", "catalog", "annotation", "training", "evaluation")
PURE_PACKAGES = ("training.engine", "toyworld")
DJANGO_SIDE = ("django", "rest_framework", "celery", "config", *APP_LAYERS)
NOT_PACKAGES = {"tests", "docs", "data", "static", "templates", "node_modules"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_modules() -> dict[str, Path]:
    modules = {}
    for folder in sorted(ROOT.iterdir()):
        if not folder.is_dir() or folder.name.startswith(".") or folder.name in NOT_PACKAGES:
            continue
        for path in folder.rglob("*.py"):
            if not any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                modules[module_name(path)] = path
    return modules


def _absolute(module: str, node: ast.ImportFrom, path: Path) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, anywhere in the file; ``from pkg import sub`` names pkg.sub."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, path)
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in project_modules() else source)
    return found


@cache
def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a package import counts as its ``__init__``)."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imports_of(module, path):
            # `import a.b.c` runs a/__init__, a/b/__init__ and a/b/c: the deepest project module is the edge.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def package_of(module: str) -> str:
    for pure in PURE_PACKAGES:
        if module == pure or module.startswith(pure + "."):
            return pure
    return module.split(".")[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in graph.items():
        source = package_of(module)
        for target in targets:
            into = package_of(target)
            if source in APP_LAYERS and into in APP_LAYERS and APP_LAYERS.index(into) > APP_LAYERS.index(source):
                found.append(f"{module} -> {target} ({source} is below {into})")
    return sorted(found)


def impure_imports(imports: dict[str, set[str]]) -> list[str]:
    """Imports of Django, Celery, the settings or an app from inside a pure package."""
    found = []
    for module, names in imports.items():
        if package_of(module) not in PURE_PACKAGES:
            continue
        for name in names:
            if name.split(".")[0] in DJANGO_SIDE and package_of(name) not in PURE_PACKAGES:
                found.append(f"{module} -> {name}")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_project():
    graph = import_graph()
    assert {"catalog.models", "annotation.services", "training.engine.loop", "evaluation.reports"} <= set(graph)
    # A function-local import is an edge like any other.
    assert "training.engine.sampling" in graph["catalog.generation"]


def test_no_app_imports_from_an_app_above_it():
    assert upward_imports(import_graph()) == []


def test_pure_packages_import_no_django():
    imports = {module: imports_of(module, path) for module, path in project_modules().items()}
    assert impure_imports(imports) == []


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_no_command_imports_another_command():
    graph = import_graph()
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if ".management.commands." in target and target != module
    )
    assert offenders == []


def test_the_rules_catch_what_they_are_for():
    graph = {
        "catalog.services": {"annotation.models"},
        "annotation.services": {"catalog.models", "annotation.tasks"},
        "annotation.tasks": {"annotation.services"},
        "evaluation.services": {"training.models", "training.engine.sampling"},
    }
    assert upward_imports(graph) == ["catalog.services -> annotation.models (catalog is below annotation)"]
    assert cycles(graph) == [["annotation.services", "annotation.tasks"]]
    pure = {
        "toyworld.env": {"numpy", "django.db"},
        "training.engine.loop": {"training.engine.config", "catalog.models", "torch"},
        "training.services": {"django.db", "training.engine.loop"},
    }
    assert impure_imports(pure) == ["toyworld.env -> django.db", "training.engine.loop -> catalog.models"]


def test_migrations_depend_one_way():
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    upward = sorted(
        f"{app}.{name} -> {dep_app}.{dep_name}"
        for (app, name), migration in loader.disk_migrations.items()
        if app in APP_LAYERS
        for dep_app, dep_name in migration.dependencies
        if dep_app in APP_LAYERS and APP_LAYERS.index(dep_app) > APP_LAYERS.index(app)
    )
    assert upward == []
