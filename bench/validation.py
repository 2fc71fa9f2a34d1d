"""Validating the largest team a topology may describe: 100 nodes x 20 agents (each with a tool), depth 10.

    .venv/bin/python bench/validation.py [--json FILE]

Target: the best of 5 validations under 50 ms (``POST /teams`` and ``PUT /teams/{id}`` validate every body).
Exits 1 when it is missed. The team is the one tests/teams/test_teams_validation.py checks for correctness.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_teams_validation import CATALOG, TOOLS, largest_team

from aiops_executor.teams.validation import validate_team

SECONDS_TARGET = 0.05
ROUNDS = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args()
    team = largest_team()
    timings = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        validate_team(team, CATALOG, TOOLS)
        timings.append(time.perf_counter() - started)
    best, worst = min(timings), max(timings)
    met = best < SECONDS_TARGET
    print(
        f"largest team: best {best * 1000:.1f} ms, worst {worst * 1000:.1f} ms of {ROUNDS}  {'ok' if met else 'MISS'}"
    )
    if options.json:
        figures = {"best_ms": round(best * 1000, 1), "worst_ms": round(worst * 1000, 1), "met": met}
        options.json.write_text(json.dumps({"validation": figures}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
