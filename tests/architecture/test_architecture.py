"""Import rules between packages, checked on the source with ``ast`` (every import counts: top-level ones,
``if TYPE_CHECKING:`` ones, lazy ones inside functions, relative ones and ``importlib.import_module`` calls).

- ``core/`` imports no domain package: the domains build on core, never the other way round
  (``aiops_executor.services`` wires the domain services onto the core context).
- ``engine/`` has no web or SQL layer and does not reach into the execution lifecycle or the team CRUD rules.
- The service never imports the development tools (``aiops_devtools``: mock provider servers); only the CLI,
  whose ``mock-llm`` command starts them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

PACKAGE_ROOT = REPO_ROOT / "src" / "aiops_executor"

DOMAIN_PACKAGES = (
    "aiops_executor.auth",
    "aiops_executor.audit",
    "aiops_executor.llm",
    "aiops_executor.teams",
    "aiops_executor.engine",
    "aiops_executor.tools",
    "aiops_executor.tool_servers",
    "aiops_executor.executions",
    "aiops_executor.triggers",
    "aiops_executor.imports",
    "aiops_executor.console",
    "aiops_executor.webconsole",
    "aiops_executor.migrations",
    "aiops_executor.app",
    "aiops_executor.cli",
)
# The top-level modules that exist to import the domains.
WIRING_MODULES = ("aiops_executor.services", "aiops_executor.models_registry")
FORBIDDEN_IN_CORE = DOMAIN_PACKAGES + WIRING_MODULES
FORBIDDEN_IN_ENGINE = ("fastapi", "sqlalchemy", "aiops_executor.executions", "aiops_executor.teams.service")

FORBIDDEN_EVERYWHERE = ("aiops_devtools",)
MAY_START_DEVTOOLS = ("aiops_executor/cli.py",)

DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def parse(source: str) -> ast.Module:
    """``ast.parse``, once more if CPython 3.11's parser trips over its shared recursion counter: ``ast`` is not
    thread-safe there (python/cpython#106905), and a run still winding down in a thread of this test process
    may be parsing too ("AST constructor recursion depth mismatch"). A source that does not parse still fails."""
    try:
        return ast.parse(source)
    except SystemError as exc:
        if "recursion depth mismatch" not in str(exc):
            raise
        return ast.parse(source)


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _matches(name: str, prefixes: Iterable[str]) -> str | None:
    for prefix in prefixes:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def imports_in(tree: ast.AST, module: str, is_package: bool) -> Iterable[tuple[int, str, list[str]]]:
    """Every import statement or call, as its line, the module it names and the names it takes from it
    (``from a import b``: ``a`` and ``[a.b]``, as ``b`` may be a submodule)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            yield node.lineno, source, [f"{source}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            first = node.args[0]
            if called in DYNAMIC_IMPORTERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value, []


def forbidden_imports(source: str, module: str, forbidden: Iterable[str], *, is_package: bool = False) -> list[str]:
    """``"line N: imports X (forbidden: P)"`` for each import in ``source`` (the code of ``module``) of a
    module under one of the ``forbidden`` prefixes, in line order."""
    prefixes = tuple(forbidden)
    found: list[tuple[int, str]] = []
    for line, name, members in imports_in(parse(source), module, is_package):
        # A forbidden module is reported once; otherwise each forbidden submodule taken from an allowed one.
        for candidate in [name] if _matches(name, prefixes) else members:
            prefix = _matches(candidate, prefixes)
            if prefix is not None:
                found.append((line, f"line {line}: imports {candidate} (forbidden: {prefix})"))
    return [problem for _, problem in sorted(found)]


def violations(package: str, forbidden: Iterable[str], *, exempt: Iterable[str] = ()) -> tuple[int, list[str]]:
    """How many modules of ``package`` were read, and every forbidden import in them."""
    prefixes = tuple(forbidden)
    skipped = set(exempt)
    paths = [
        path
        for path in sorted((PACKAGE_ROOT / package).rglob("*.py"))
        if path.relative_to(PACKAGE_ROOT.parent).as_posix() not in skipped
    ]
    problems = [
        f"{path.relative_to(PACKAGE_ROOT.parent)} {problem}"
        for path in paths
        for problem in forbidden_imports(
            path.read_text(encoding="utf-8"), module_name(path), prefixes, is_package=path.name == "__init__.py"
        )
    ]
    return len(paths), problems


# -- the rules -------------------------------------------------------------------------------------


def test_core_imports_no_domain_package() -> None:
    checked, problems = violations("core", FORBIDDEN_IN_CORE)
    assert checked >= 10  # the walk really read core/
    assert not problems, "core/ must not import domain packages:\n" + "\n".join(problems)


def test_engine_has_no_web_sql_or_lifecycle_imports() -> None:
    checked, problems = violations("engine", FORBIDDEN_IN_ENGINE)
    assert checked >= 5  # the walk really read engine/
    assert not problems, "engine/ must not import these:\n" + "\n".join(problems)


def test_the_service_never_imports_the_development_tools() -> None:
    checked, problems = violations(".", FORBIDDEN_EVERYWHERE, exempt=MAY_START_DEVTOOLS)
    assert checked >= 100  # the walk really read the whole package
    assert not problems, "only the CLI's mock-llm command may import aiops_devtools:\n" + "\n".join(problems)


def provider_type_switches(source: str) -> list[int]:
    """Lines comparing something with a provider type's name (``x == "ollama"``, ``t in {"vllm", ...}``)."""
    from aiops_executor.llm.adapters import PROVIDER_TYPES

    lines = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {
                const.value
                for operand in operands
                for const in ast.walk(operand)
                if isinstance(const, ast.Constant) and isinstance(const.value, str)
            }
            if names & set(PROVIDER_TYPES):
                lines.append(node.lineno)
    return lines


def test_provider_types_are_switched_on_only_in_their_adapters() -> None:
    """A provider type's rules live in its adapter module (llm/adapters/): adding a vendor is one new module and
    one registry line, not a string switch spread over the service."""
    adapters = PACKAGE_ROOT / "llm" / "adapters"
    found = [
        f"{path.relative_to(PACKAGE_ROOT.parent)}:{line}"
        for path in sorted(PACKAGE_ROOT.rglob("*.py"))
        if adapters not in path.parents
        for line in provider_type_switches(path.read_text(encoding="utf-8"))
    ]
    assert not found, "compare with adapter_for(type) attributes instead:\n" + "\n".join(found)
    assert provider_type_switches('if provider.type == "ollama":\n    pass\n') == [1]
    assert provider_type_switches('if kind in ("vllm", "x"):\n    pass\n') == [1]


def test_every_provider_type_has_one_adapter() -> None:
    from aiops_executor.llm.adapters import PROVIDER_TYPES, adapter_for
    from aiops_executor.llm.schemas import ProviderType

    assert [t.value for t in ProviderType] == list(PROVIDER_TYPES)
    assert {adapter_for(t).type for t in PROVIDER_TYPES} == set(PROVIDER_TYPES)


# -- the checker finds what it must ----------------------------------------------------------------

PLANTED = """\
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import aiops_executor.llm.runtime
from aiops_executor import __version__, teams
from aiops_executor.core.db import Base

if TYPE_CHECKING:
    from aiops_executor.executions.manager import ExecutionManager


def lazy() -> None:
    from aiops_executor.auth import service


def relative() -> None:
    from ..tools import registry
    from . import db


def dynamic() -> None:
    importlib.import_module("aiops_executor.console.runner")
    __import__("aiops_executor.cli")
"""


def test_checker_finds_every_kind_of_import() -> None:
    problems = forbidden_imports(PLANTED, "aiops_executor.core.planted", FORBIDDEN_IN_CORE)
    assert problems == [
        "line 6: imports aiops_executor.llm.runtime (forbidden: aiops_executor.llm)",
        "line 7: imports aiops_executor.teams (forbidden: aiops_executor.teams)",
        "line 11: imports aiops_executor.executions.manager (forbidden: aiops_executor.executions)",
        "line 15: imports aiops_executor.auth (forbidden: aiops_executor.auth)",
        "line 19: imports aiops_executor.tools (forbidden: aiops_executor.tools)",
        "line 24: imports aiops_executor.console.runner (forbidden: aiops_executor.console)",
        "line 25: imports aiops_executor.cli (forbidden: aiops_executor.cli)",
    ]


@pytest.mark.parametrize(
    "source",
    [
        "from aiops_executor.core.db import Base",
        "from aiops_executor import __version__",
        "import aiops_executor.llmish",  # a prefix of a name is not the package
        "from aiops_executor.core import telemetry",
        "from . import metrics",
        "import_module(name)",  # not a literal: nothing to check
    ],
)
def test_checker_allows_core_imports(source: str) -> None:
    assert forbidden_imports(source, "aiops_executor.core.planted", FORBIDDEN_IN_CORE) == []


def test_checker_resolves_relative_imports_in_a_package_init() -> None:
    source = "from .context import AppContext\nfrom ..llm import models\n"
    assert forbidden_imports(source, "aiops_executor.core", FORBIDDEN_IN_CORE, is_package=True) == [
        "line 2: imports aiops_executor.llm (forbidden: aiops_executor.llm)",
    ]


def test_checker_applies_the_engine_rule() -> None:
    source = (
        "from fastapi import Depends\n"
        "import sqlalchemy.ext.asyncio\n"
        "from aiops_executor.engine.topology import TeamSpec\n"
        "from aiops_executor.teams import service\n"
        "from aiops_executor.executions.models import Execution\n"
    )
    assert forbidden_imports(source, "aiops_executor.engine.planted", FORBIDDEN_IN_ENGINE) == [
        "line 1: imports fastapi (forbidden: fastapi)",
        "line 2: imports sqlalchemy.ext.asyncio (forbidden: sqlalchemy)",
        "line 4: imports aiops_executor.teams.service (forbidden: aiops_executor.teams.service)",
        "line 5: imports aiops_executor.executions.models (forbidden: aiops_executor.executions)",
    ]


def test_module_names() -> None:
    assert module_name(PACKAGE_ROOT / "core" / "context.py") == "aiops_executor.core.context"
    assert module_name(PACKAGE_ROOT / "core" / "__init__.py") == "aiops_executor.core"


def status_writes(source: str) -> list[int]:
    """Lines that write an execution row: ``update(Execution)...``, ``<execution>.status = ...`` or a new
    ``Execution(...)``."""
    lines = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if (
                name == "update" and any(isinstance(a, ast.Name) and a.id == "Execution" for a in node.args)
            ) or name == "Execution":
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "status"
                    and isinstance(target.value, ast.Name)
                    and "execution" in target.value.id
                ):
                    lines.append(node.lineno)
    return sorted(lines)


def test_status_write_detector_finds_each_form() -> None:
    source = (
        "update(Execution).values(status='failed')\n"
        "execution.status = 'failed'\n"
        "Execution(id=1, status='pending')\n"
        "update(Team).values(status='x')\n"
    )
    assert status_writes(source) == [1, 2, 3]


def test_only_the_executions_repository_writes_execution_rows() -> None:
    owner = PACKAGE_ROOT / "executions" / "repository.py"
    offenders = {
        str(path.relative_to(PACKAGE_ROOT)): lines
        for path in PACKAGE_ROOT.rglob("*.py")
        if path != owner and "migrations" not in path.parts
        for lines in [status_writes(path.read_text())]
        if lines
    }
    assert offenders == {}
