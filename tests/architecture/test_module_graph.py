"""The shape of the package, checked on the source with ``ast``:

- no import cycle between modules, counting imports inside functions (``if TYPE_CHECKING:`` ones aside, as they
  never run);
- between packages (``aiops_executor.<name>``) dependencies point one way. Routers (``endpoints`` modules) and
  the entry points (``app``, ``cli``, ``worker``, ``services``) compose the domains and are left out: a router
  may hand one domain's answer to another's service (deleting a team asks executions whether it still runs);
- ``services.py`` (the process's service locator) is imported only by routers and entry points;
- no source file is longer than 600 lines (migrations aside).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.architecture.test_architecture import PACKAGE_ROOT, imports_in, module_name, parse

MAX_LINES = 600
ENTRY_POINTS = {"aiops_executor.app", "aiops_executor.cli", "aiops_executor.worker", "aiops_executor.services"}
SERVICE_LOCATOR = "aiops_executor.services"


def source_files() -> list[Path]:
    return [p for p in sorted(PACKAGE_ROOT.rglob("*.py")) if "migrations" not in p.relative_to(PACKAGE_ROOT).parts]


def _type_checking_only(tree: ast.AST) -> set[int]:
    """``id()`` of every node under an ``if TYPE_CHECKING:`` block."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def runtime_imports(source: str, module: str, known: Iterable[str], *, is_package: bool = False) -> set[str]:
    """The modules among ``known`` that ``module`` imports when it runs: at the top, in functions, relatively
    or dynamically; ``from package import name`` counts as the submodule when ``name`` is one."""
    modules = set(known)
    tree = parse(source)
    skipped = _type_checking_only(tree)
    wanted = [node for node in ast.walk(tree) if id(node) not in skipped]
    found: set[str] = set()
    for node in wanted:
        if not isinstance(node, ast.Import | ast.ImportFrom | ast.Call):
            continue
        holder = ast.Module(body=[node] if isinstance(node, ast.stmt) else [ast.Expr(node)], type_ignores=[])
        for _, name, members in imports_in(holder, module, is_package):
            for candidate in [m for m in members if m in modules] or [name]:
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != module:
                    found.add(candidate)
    return found


def module_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in source_files()}
    return {
        module: runtime_imports(path.read_text(encoding="utf-8"), module, paths, is_package=path.name == "__init__.py")
        for module, path in paths.items()
    }


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            if targets:
                target = targets.pop()
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, sorted(graph.get(target, ()))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return sorted(found)


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def composes(module: str) -> bool:
    return module in ENTRY_POINTS or module.rsplit(".", 1)[-1] == "endpoints"


def package_graph(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if composes(module):
            continue
        source = package_of(module)
        packages.setdefault(source, set()).update(package_of(t) for t in targets if package_of(t) != source)
    return packages


def _edges(graph: Mapping[str, Iterable[str]], members: list[str]) -> list[str]:
    return [f"  {a} -> {b}" for a in members for b in sorted(graph.get(a, ())) if b in members]


# -- the rules -------------------------------------------------------------------------------------


def test_no_module_imports_itself_back() -> None:
    graph = module_graph()
    assert len(graph) > 150  # the walk really read the package
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(
        line for component in found for line in [", ".join(component), *_edges(graph, component)]
    )


def test_packages_depend_one_way() -> None:
    packages = package_graph(module_graph())
    assert {"aiops_executor.teams", "aiops_executor.llm", "aiops_executor.executions"} <= set(packages)
    found = cycles(packages)
    assert not found, "packages that depend on each other (outside routers and entry points):\n" + "\n".join(
        line for component in found for line in [", ".join(component), *_edges(packages, component)]
    )


def test_only_routers_and_entry_points_use_the_service_locator() -> None:
    users = sorted(m for m, targets in module_graph().items() if SERVICE_LOCATOR in targets and not composes(m))
    assert users == [], f"take the collaborators you use instead of {SERVICE_LOCATOR}: {users}"


def test_source_files_stay_short() -> None:
    lengths = {
        p.relative_to(PACKAGE_ROOT.parent).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in source_files()
    }
    assert len(lengths) > 150
    too_long = {name: lines for name, lines in lengths.items() if lines > MAX_LINES}
    assert too_long == {}, f"split these (a reviewer holds at most {MAX_LINES} lines in their head): {too_long}"


# -- the checks find what they must ----------------------------------------------------------------


def test_cycles_are_found_however_long() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"g"}, "g": {"f"}}
    assert cycles(graph) == [["a", "b", "c"], ["f", "g"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_inside_functions_count_and_type_checking_ones_do_not() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from aiops_executor.core import settings\n"
        "if TYPE_CHECKING:\n"
        "    from aiops_executor.executions.manager import ExecutionManager\n"
        "def later():\n"
        "    from aiops_executor.services import ServiceContext\n"
        "    from . import egress\n"
        "    importlib.import_module('aiops_executor.cli')\n"
    )
    known = [
        "aiops_executor.core.settings",
        "aiops_executor.core.egress",
        "aiops_executor.core",
        "aiops_executor.executions.manager",
        "aiops_executor.services",
        "aiops_executor.cli",
    ]
    assert runtime_imports(source, "aiops_executor.core.planted", known) == {
        "aiops_executor.core.settings",
        "aiops_executor.core.egress",
        "aiops_executor.services",
        "aiops_executor.cli",
    }


def test_routers_and_entry_points_are_left_out_of_the_package_rule() -> None:
    graph = {
        "aiops_executor.teams.service": {"aiops_executor.llm.catalog"},
        "aiops_executor.teams.endpoints": {"aiops_executor.executions.service"},
        "aiops_executor.executions.service": {"aiops_executor.teams.service"},
        "aiops_executor.llm.catalog": set(),
        "aiops_executor.services": {"aiops_executor.executions.service"},
    }
    assert package_graph(graph) == {
        "aiops_executor.teams": {"aiops_executor.llm"},
        "aiops_executor.executions": {"aiops_executor.teams"},
        "aiops_executor.llm": set(),
    }
    graph["aiops_executor.llm.catalog"] = {"aiops_executor.teams.service"}
    assert cycles(package_graph(graph)) == [["aiops_executor.llm", "aiops_executor.teams"]]
