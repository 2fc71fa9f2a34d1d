"""``aiops-executor lab``: the incident lab from the command line (see ``lab.up``, ``lab.faults``, ``lab.scoring``)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from aiops_executor.console.errors import CommandFailure
from aiops_executor.core.settings import get_settings
from aiops_executor.lab import faults, scoring, service
from aiops_executor.lab.system import LabError, LabState, lab_dir_of

lab_app = typer.Typer(
    help="The incident lab: a real gateway, shop, PostgreSQL, Redis, Prometheus and Alertmanager on loopback, "
    "real faults, and scores of the investigations.",
    no_args_is_help=True,
)
# Wide enough for the score table when the output is a file or a pipe.
out = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, soft_wrap=True)
DEFAULT_MODEL = f"{service.SIMULATOR_PROVIDER}/{service.SIMULATOR_MODEL}"


@contextlib.contextmanager
def _explained() -> Iterator[None]:
    try:
        yield
    except LabError as exc:
        raise CommandFailure(f"lab: {exc}") from None


def _model(value: str) -> tuple[str, str]:
    provider, _, model_id = value.partition("/")
    if not provider or not model_id:
        raise CommandFailure("--model takes PROVIDER/MODEL, e.g. local-sim/sim-1")
    return provider, model_id


def _state() -> LabState:
    state = LabState.load(lab_dir_of(get_settings()))
    if state is None:
        raise CommandFailure("lab: the lab is not up (run 'aiops-executor lab up')")
    return state


@lab_app.command("up")
def lab_up(
    as_json: Annotated[bool, typer.Option("--json", help="Print what was started as one JSON object.")] = False,
    service_url: Annotated[
        str | None, typer.Option(help="A running service to use instead of starting one.", show_default=False)
    ] = None,
    model: Annotated[str, typer.Option(help="PROVIDER/MODEL the lab's team uses.")] = DEFAULT_MODEL,
) -> None:
    """Start the lab's system and its team (the service too, unless --service-url names one)."""
    from aiops_executor.lab import up  # the service's own modules: only the commands that sign in need them

    provider, model_id = _model(model)
    with _explained():
        state = up.bring_up(get_settings(), service_url=service_url, provider=provider, model_id=model_id)
    if as_json:
        out.print_json(json.dumps(state.summary()))
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("node", "kind", "address", "pid"):
        table.add_column(column)
    for component in state.components:
        table.add_row(
            component["node_id"], component["kind"], f"{component['host']}:{component['port']}", str(component["pid"])
        )
    out.print(table)
    out.print(f"service {state.service_url} · team {state.team_id}")
    out.print(f"Prometheus {state.prometheus_url} · Alertmanager {state.alertmanager_url}")


@lab_app.command("fault")
def lab_fault(name: Annotated[str, typer.Argument(help=f"One of: {', '.join(faults.SCENARIOS)}.")]) -> None:
    """Inject one fault (it lasts until 'lab heal')."""
    state = _state()
    with _explained():
        scenario = faults.scenario(name)
        scenario.inject(state)
    out.print(f"injected {scenario.name}: {scenario.description} (node {scenario.node_id})")


@lab_app.command("heal")
def lab_heal() -> None:
    """Heal every fault."""
    state = _state()
    with _explained():
        faults.heal_all(state)
    out.print("healed")


@lab_app.command("run")
def lab_run(
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", help="A scenario to run (repeatable; default: all).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="PROVIDER/MODEL to investigate with (default: the team's).", show_default=False)
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the scores as JSON to this file.")] = None,
    seconds: Annotated[float, typer.Option(help="How long to wait for each step of a scenario.")] = 60.0,
) -> None:
    """Inject each scenario's fault, wait for the alert and the run Alertmanager starts, heal, and score."""
    from aiops_executor.lab import up

    state = _state()
    with _explained():
        chosen = [faults.scenario(name) for name in scenario or list(faults.SCENARIOS)]
        username, password = up.admin_credentials(get_settings())
        with service.signed_in(state.service_url, username, password) as client:
            if model is not None:
                provider, model_id = _model(model)
                service.ensure_model(client, provider, model_id)
                service.ensure_team(client, service.team_body(state, provider, model_id))
            scores = []
            for each in chosen:
                score = scoring.run_scenario(each, state, client, seconds=seconds, with_model=model is not None)
                scores.append(score)
                out.print(f"{each.name}: {'rank ' + str(score.rank) if score.rank else score.error or 'not a suspect'}")
    out.print(score_table(scores))
    if json_file is not None:
        json_file.write_text(json.dumps({"scenarios": [s.as_dict() for s in scores]}, indent=2))
    if any(s.error for s in scores):
        raise typer.Exit(1)


def score_table(scores: list[scoring.Score]) -> Table:
    table = Table(title="incident lab", box=box.SIMPLE_HEAD, show_edge=False)
    columns = (
        "scenario",
        "node",
        "fault->alert s",
        "delivery->run s",
        "run s",
        "rank",
        "signal",
        "false suspects",
        "summary",
    )
    for column in columns:
        table.add_column(column)

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    for s in scores:
        table.add_row(
            s.scenario,
            s.node_id,
            figure(s.fault_to_alert_seconds),
            figure(s.delivery_to_start_seconds),
            figure(s.run_seconds),
            str(s.rank) if s.rank else ("error" if s.error else "-"),
            "yes" if s.signal_found else "no",
            ", ".join(s.false_suspects) or "none",
            "-" if s.summary_names_node is None else ("names it" if s.summary_names_node else "misses it"),
        )
    return table


@lab_app.command("down")
def lab_down() -> None:
    """Stop everything the lab started."""
    from aiops_executor.lab import up

    with _explained():
        stopped = up.bring_down(lab_dir_of(get_settings()))
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "the lab was not up")
