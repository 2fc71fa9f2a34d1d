"""The console's vendored browser libraries are exactly the files of the npm packages pinned in
``webconsole/package-lock.json``, with their licences (``webconsole/vendor.py`` regenerates them)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
FRONTEND = ROOT / "webconsole"
VENDOR = ROOT / "src" / "aiops_executor" / "webconsole" / "static" / "vendor"


def _vendor_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webconsole_vendor", FRONTEND / "vendor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vendor = _vendor_script()
MANIFEST = json.loads((VENDOR / "MANIFEST.json").read_text())["files"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dependencies_are_pinned_exactly_and_locked() -> None:
    package = json.loads((FRONTEND / "package.json").read_text())
    shipped, for_tests = package["dependencies"], package.get("devDependencies", {})
    locked = vendor.locked_versions()
    for name, version in {**shipped, **for_tests}.items():
        assert version[0].isdigit(), f"{name} is not pinned to one version: {version}"
        assert locked[name] == version, name
    assert set(vendor.FILES) <= set(locked)
    # What the tests use (axe-core) never ships with the console.
    assert "axe-core" in for_tests
    assert not set(for_tests) & set(vendor.FILES)
    assert not any("axe" in entry["file"] for entry in MANIFEST)


def test_the_manifest_lists_every_vendored_file_with_its_package_version() -> None:
    locked = vendor.locked_versions()
    expected = {(p, vendor.vendored_name(p, path), path) for p, paths in vendor.FILES.items() for path in paths}
    assert {(e["package"], e["file"], e["source"]) for e in MANIFEST} == expected
    for entry in MANIFEST:
        assert entry["version"] == locked[entry["package"]], entry
        assert sha256(VENDOR / entry["file"]) == entry["sha256"], f"{entry['file']} was changed by hand"
    on_disk = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert on_disk == {e["file"] for e in MANIFEST}, "a vendored file is not in the manifest (or missing)"


def test_every_vendored_package_ships_its_licence() -> None:
    for package in vendor.FILES:
        licence = VENDOR / vendor.vendored_name(package, "LICENSE")
        assert licence.is_file(), package
        assert "Permission is hereby granted" in licence.read_text() or "MIT" in licence.read_text(), package


@pytest.mark.skipif(
    not (FRONTEND / "node_modules").is_dir(),
    reason="webconsole/node_modules is absent (run: python3 webconsole/vendor.py)",
)
def test_vendored_files_equal_the_installed_packages() -> None:
    """With the packages installed (``npm ci``), each copy is byte for byte the package's file."""
    for entry in MANIFEST:
        installed = FRONTEND / "node_modules" / entry["package"]
        version = json.loads((installed / "package.json").read_text())["version"]
        assert version == entry["version"], f"node_modules has {entry['package']} {version}; run npm ci"
        assert sha256(installed / entry["source"]) == entry["sha256"], entry["file"]
