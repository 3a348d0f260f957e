"""requirements.lock pins what the image ships: every runtime dependency of pyproject.toml,
at a version its specifier allows, with hashes, and the versions the tests run on."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging import requirements, utils

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.M)


def _pins() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    return {utils.canonicalize_name(name): version for name, version in PIN.findall(text)}


def _runtime() -> list[requirements.Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [requirements.Requirement(r) for r in project["dependencies"]]


def test_every_runtime_dependency_is_pinned_within_its_specifier() -> None:
    pins = _pins()
    for wanted in _runtime():
        name = utils.canonicalize_name(wanted.name)
        assert name in pins, f"{wanted.name} is not in requirements.lock (run: make lock)"
        assert wanted.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {wanted.name}=={pins[name]}, outside {wanted.specifier}"
        )


def test_every_pin_has_a_hash() -> None:
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n\n", 1)[-1])
    pinned = [b for b in blocks if "==" in b.split("\n", 1)[0]]
    assert len(pinned) == len(_pins()) > len(_runtime())
    assert all("--hash=sha256:" in block for block in pinned)


def test_the_tests_run_on_the_pinned_versions() -> None:
    for name, version in _pins().items():
        assert importlib.metadata.version(name) == version, (
            f"{name} {importlib.metadata.version(name)} is installed, the lock pins {version}"
        )
