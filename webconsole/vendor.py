#!/usr/bin/env python3
"""Copies the web console's third-party browser files from the npm packages pinned in package-lock.json into
the Python package (src/aiops_executor/webconsole/static/vendor), with their licences, and writes MANIFEST.json
(package, version, file, sha256 of each copy). The service then needs no Node.js at run time, and
tests/test_webconsole_vendor.py checks that the copies are exactly these packages' files.

    python3 webconsole/vendor.py            # npm ci, then copy and write the manifest
    python3 webconsole/vendor.py --no-install   # reuse webconsole/node_modules as it is
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR_DIR = HERE.parent / "src" / "aiops_executor" / "webconsole" / "static" / "vendor"
MANIFEST = VENDOR_DIR / "MANIFEST.json"

# package -> the files of it the console loads or must ship (paths inside the package).
# cytoscape-dagre's ES module bundles @dagrejs/dagre and @dagrejs/graphlib, so their licences ship too.
FILES: dict[str, list[str]] = {
    "cytoscape": ["dist/cytoscape.esm.min.mjs", "LICENSE"],
    "cytoscape-dagre": ["dist/cytoscape-dagre.min.mjs", "LICENSE"],
    "@dagrejs/dagre": ["LICENSE"],
    "@dagrejs/graphlib": ["LICENSE"],
    "js-yaml": ["dist/browser/js-yaml.esm.min.mjs", "LICENSE"],
}


def locked_versions(lock_file: Path = HERE / "package-lock.json") -> dict[str, str]:
    packages = json.loads(lock_file.read_text())["packages"]
    return {path.removeprefix("node_modules/"): entry["version"] for path, entry in packages.items() if path}


def vendored_name(package: str, path: str) -> str:
    """Where a package file goes under vendor/: one folder per package, the file's own name."""
    return f"{package.replace('@', '').replace('/', '-')}/{Path(path).name}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-install", action="store_true", help="do not run npm ci first")
    args = parser.parse_args()
    if not args.no_install:
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=HERE, check=True)  # noqa: S607
    versions = locked_versions()
    if VENDOR_DIR.exists():
        shutil.rmtree(VENDOR_DIR)
    entries = []
    for package, paths in FILES.items():
        root = HERE / "node_modules" / package
        installed = json.loads((root / "package.json").read_text())["version"]
        if installed != versions[package]:
            print(
                f"{package}: node_modules has {installed}, the lock file {versions[package]}; run npm ci",
                file=sys.stderr,
            )
            return 1
        for path in paths:
            target = VENDOR_DIR / vendored_name(package, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / path, target)
            entries.append(
                {
                    "package": package,
                    "version": installed,
                    "source": path,
                    "file": vendored_name(package, path),
                    "sha256": sha256(target),
                }
            )
    MANIFEST.write_text(json.dumps({"files": entries}, indent=2) + "\n")
    print(f"vendored {len(entries)} files into {VENDOR_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
