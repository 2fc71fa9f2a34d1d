"""What a tool's observation says about its target: a verdict and the signals that set it.

Every built-in tool ends its report with ``verdict`` (``ok | degraded | failed | unknown``) and ``signals``
(short human strings: ``"connections 97/100 (97 %)"``, ``"PING timed out after 2 s"``). ``failed`` and
``degraded`` are observations of the target -- a refused connection is one. ``unknown`` means the tool could
not observe the target for a reason of ours (egress denied, a missing or invalid target, bad arguments, a tool
server that is unavailable, credentials the target refused): nothing was learned about it.

Thresholds are per tool, with defaults in each tool's module, and settable per node in its attributes:
``{"thresholds": {"http_check": {"latency_degraded_ms": 300}}}``. An unknown threshold name or a value that is
not a positive number is refused (a typo must not silently keep the default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiops_executor.core.text import shorten

THRESHOLDS_ATTRIBUTE = "thresholds"

MAX_SIGNALS = 8
MAX_SIGNAL_CHARS = 200


class Verdict(StrEnum):
    ok = "ok"
    degraded = "degraded"
    failed = "failed"
    unknown = "unknown"


# How bad an observed verdict is; ``unknown`` observed nothing, so it is not on this scale.
SEVERITY = {Verdict.ok: 0, Verdict.degraded: 1, Verdict.failed: 2}


def worst(verdicts: Iterable[Verdict | str]) -> Verdict:
    """The worst observed verdict; ``unknown`` when none observed anything."""
    observed = [Verdict(v) for v in verdicts if Verdict(v) is not Verdict.unknown]
    return max(observed, key=SEVERITY.__getitem__) if observed else Verdict.unknown


@dataclass
class Findings:
    """Collects what a tool observed; the verdict is the worst finding, the signals those that set it."""

    _findings: list[tuple[Verdict, str]] = field(default_factory=list)
    _unknown: list[str] = field(default_factory=list)
    _unjudged: bool = False

    def ok(self, signal: str) -> None:
        self._findings.append((Verdict.ok, signal))

    def degraded(self, signal: str) -> None:
        self._findings.append((Verdict.degraded, signal))

    def failed(self, signal: str) -> None:
        self._findings.append((Verdict.failed, signal))

    def unknown(self, signal: str) -> None:
        """Something that could not be observed for a reason of ours; the verdict is ``unknown`` unless
        something else was observed."""
        self._unknown.append(signal)

    def unjudged(self, signal: str) -> None:
        """Data was read from the target, but nothing says whether it is good or bad: the verdict stays
        ``unknown`` while the call still counts as an observation (the model reads the data)."""
        self._unjudged = True
        self._unknown.append(signal)

    def graded(self, value: float, degraded_at: float, failed_at: float, signal: str) -> None:
        """``value`` against two thresholds (at or above ``failed_at``: failed; ``degraded_at``: degraded)."""
        if value >= failed_at:
            self.failed(signal)
        elif value >= degraded_at:
            self.degraded(signal)
        else:
            self.ok(signal)

    @property
    def observed(self) -> bool:
        """Whether anything was found of the target (a finding other than an ``unknown``)."""
        return bool(self._findings)

    @property
    def verdict(self) -> Verdict:
        return worst(verdict for verdict, _ in self._findings)

    def signals(self) -> list[str]:
        verdict = self.verdict
        if verdict is Verdict.unknown:
            chosen = self._unknown
        else:
            # The signals that set the verdict first, then the other bad ones; ok signals only when all is ok.
            ranked = sorted(self._findings, key=lambda finding: -SEVERITY[finding[0]])
            chosen = [signal for level, signal in ranked if level is verdict or level is not Verdict.ok]
        return [_bounded(signal) for signal in chosen[:MAX_SIGNALS]]

    def report(self) -> dict[str, Any]:
        """The ``verdict`` and ``signals`` keys a tool's report ends with (and ``observed`` for data unjudged)."""
        report: dict[str, Any] = {"verdict": self.verdict.value, "signals": self.signals()}
        if self._unjudged and self.verdict is Verdict.unknown:
            report["observed"] = True
        return report


def judged(report: dict[str, Any], findings: Findings) -> dict[str, Any]:
    return {**report, **findings.report()}


@dataclass(frozen=True)
class Judgement:
    """What a tool call's outcome says of its target: the verdict, the signals that set it, and whether the call
    observed the target at all (an ``unknown`` call may still have read data nobody judged)."""

    verdict: Verdict
    signals: list[str]
    observed: bool


def outcome_verdict(status: str, output: Mapping[str, Any], *, builtin: bool) -> Judgement:
    """The judgement of a tool call's outcome.

    A built-in tool's report carries its own verdict. An error outcome observed nothing of the target -- except
    a built-in tool that did not answer within its time, which is how a hung target shows. A tool of an MCP
    server is ``unknown`` unless its structured result states a verdict, but its answer is an observation."""
    stated = output if builtin else output.get("structured_content")
    if status == "success" and isinstance(stated, Mapping) and stated.get("verdict") in Verdict.__members__:
        verdict = Verdict(stated["verdict"])
        signals = stated.get("signals")
        listed = [_bounded(str(s)) for s in signals[:MAX_SIGNALS]] if isinstance(signals, list) else []
        observed = verdict is not Verdict.unknown or stated.get("observed") is True or not builtin
        return Judgement(verdict, listed, observed)
    if status == "success":
        return Judgement(Verdict.unknown, ["the tool's result states no verdict"], not builtin)
    code = str(output.get("error_code") or "TOOL_FAILED")
    message = _bounded(f"{code}: {output.get('error_message') or 'the call failed'}")
    if code == "TOOL_TIMEOUT" and builtin:
        return Judgement(Verdict.failed, [message], True)
    return Judgement(Verdict.unknown, [message], False)


def _bounded(signal: str) -> str:
    return shorten(" ".join(signal.split()), MAX_SIGNAL_CHARS)
