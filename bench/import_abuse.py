"""Hostile Kubernetes manifests against the importer: time and peak memory of each refusal.

    .venv/bin/python bench/import_abuse.py [--json FILE]

Targets (issue 25): each manifest refused in under 2 s, with a peak below 100 MB (tracemalloc, the importer's own
allocations). Exits 1 when a target is missed. The manifests are the ones tests/imports/test_import_abuse.py refuses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_import_abuse import (
    billion_laughs,
    deep_nesting,
    environment_bomb,
    many_objects,
    python_object,
)

from aiops_executor.imports.kubernetes import import_manifests
from aiops_executor.imports.manifests import ManifestError

SECONDS_TARGET = 2.0
PEAK_TARGET_BYTES = 100 * 1024 * 1024


def measure(name: str, text: str) -> dict[str, object]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        import_manifests(text)
        outcome = "imported (with warnings)"
    except ManifestError as exc:
        outcome = f"refused: {str(exc)[:80]}"
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "manifest": name,
        "bytes": len(text),
        "seconds": round(seconds, 3),
        "peak_mb": round(peak / 2**20, 1),
        "outcome": outcome,
        "met": seconds < SECONDS_TARGET and peak < PEAK_TARGET_BYTES,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args()
    makers = (billion_laughs, environment_bomb, many_objects, deep_nesting, python_object)
    rows = [measure(make.__name__, make()) for make in makers]
    for row in rows:
        print(
            f"{row['manifest']:<18} {row['bytes']:>9,} B {row['seconds']:>7.3f} s {row['peak_mb']:>7.1f} MB  "
            f"{'ok ' if row['met'] else 'MISS'} {row['outcome']}"
        )
    if options.json:
        options.json.write_text(json.dumps({"import_abuse": rows}, indent=2))
    return 0 if all(row["met"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
