"""Reading what ``aiops-executor run`` is given, with one clear line per problem.

A team file is the JSON body of ``POST /teams`` (``TeamSpec``). Problems are reported with the same paths
the API uses (``topology.nodes[3].agents[0].model_id``), so a file that runs here posts cleanly there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from aiops_executor.engine.structured import InvalidOutputSchema, check_schema
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.teams.validation import Issue, ValidationReport


class InputProblem(Exception):
    """Input the command cannot run with: a one-line headline, then one line per problem."""

    def __init__(self, headline: str, details: Sequence[str] = ()) -> None:
        super().__init__(headline)
        self.headline = headline
        self.details = list(details)

    def print(self, console: Console) -> None:
        console.print(f"[red]error:[/red] {escape(self.headline)}", highlight=False)
        for line in self.details:
            console.print(f"  {line}", markup=False, highlight=False)


def error_path(location: Iterable[int | str]) -> str:
    """``("topology", "nodes", 3, "agents", 0, "model_id")`` -> ``topology.nodes[3].agents[0].model_id``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(the whole document)"


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputProblem(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputProblem(f"{what} {path} is a directory, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputProblem(f"cannot read {what} {path}: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputProblem(
            f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def load_team_file(path: Path) -> TeamSpec:
    """The team file as a ``TeamSpec``; every field problem is listed with its path."""
    document = _read_json(path, "team file")
    try:
        return TeamSpec.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        lines = [f"{error_path(error['loc'])}: {error['msg']}" for error in errors]
        count = len(lines)
        raise InputProblem(
            f"team file {path} is not a valid team definition ({count} problem{'s' if count != 1 else ''}):", lines
        ) from None


def invalid_topology(path: Path, report: ValidationReport) -> InputProblem:
    """The validation errors of a team (against the LLM configuration and the tool registry), one per line."""
    count = len(report.errors)
    return InputProblem(
        f"team file {path} has an invalid topology ({count} problem{'s' if count != 1 else ''}):",
        [describe_issue(issue) for issue in report.errors],
    )


def describe_issue(issue: Issue) -> str:
    return f"{issue.path}: {issue.message} [{issue.code}]"


def parse_context(text: str | None) -> dict[str, Any]:
    """``--context``: a JSON object handed to the agents with the task."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputProblem(f"--context is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise InputProblem(f"--context must be a JSON object, not {type(value).__name__}")
    return value


def load_output_schema(path: Path | None) -> dict[str, Any] | None:
    """``--output-schema``: a JSON Schema file describing an object."""
    if path is None:
        return None
    schema = _read_json(path, "output schema")
    if not isinstance(schema, dict):
        raise InputProblem(f"output schema {path} must be a JSON object (a JSON Schema), not {type(schema).__name__}")
    try:
        check_schema(schema)
    except InvalidOutputSchema as exc:
        raise InputProblem(f"output schema {path}: {exc}") from None
    return schema


def model_references(spec: TeamSpec) -> set[tuple[str, str]]:
    """Every ``(model_provider, model_id)`` the team's supervisors and agents use."""
    topology = spec.topology
    refs = {(topology.global_supervisor.model_provider, topology.global_supervisor.model_id)}
    for node in topology.nodes:
        refs.add((node.supervisor_config.model_provider, node.supervisor_config.model_id))
        refs.update((agent.model_provider, agent.model_id) for agent in node.agents)
    return refs
