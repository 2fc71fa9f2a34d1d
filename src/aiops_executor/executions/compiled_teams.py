"""Compiled teams kept per process, so that the runs of a team reuse its graphs.

Building a ``CompiledTeam`` (validating the snapshot, building and compiling the node-team and global graphs)
costs a few milliseconds of CPU per run, paid when a storm of alerts starts many runs at once. A compiled team
holds no state of a run (that lives in ``TeamRun``), so runs of the same snapshot share one. Only teams whose
tools are all built in are kept: an MCP server's tools are read from its stored row at each run, since the
server may have changed, been switched off or been given new secrets since.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

from aiops_executor.engine import CompiledTeam

MAX_TEAMS = 64


def snapshot_key(snapshot: dict[str, Any]) -> str:
    canonical = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class CompiledTeams:
    """The most recently used compiled teams, by snapshot."""

    def __init__(self, max_teams: int = MAX_TEAMS) -> None:
        self.max_teams = max_teams
        self._teams: OrderedDict[str, CompiledTeam] = OrderedDict()

    def get(self, key: str) -> CompiledTeam | None:
        team = self._teams.get(key)
        if team is not None:
            self._teams.move_to_end(key)
        return team

    def keep(self, key: str, team: CompiledTeam) -> None:
        self._teams[key] = team
        self._teams.move_to_end(key)
        while len(self._teams) > self.max_teams:
            self._teams.popitem(last=False)

    def __len__(self) -> int:
        return len(self._teams)
