"""Building the small Go checkers under hack/ (statscheck, metricscheck) once per source
version, cached beside the control-plane binaries. Without Go the test is skipped, or
fails when the suite must run everything (VK_FARGATE_REQUIRE_E2E=1)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vk_fargate import settings

HACK = Path(__file__).resolve().parents[1] / "hack"


def checker(name: str, *, timeout: float) -> Path:
    """The binary of ``hack/<name>``, built now unless its sources' build is cached."""
    source = HACK / name
    files = [source / f for f in ("go.mod", "go.sum", "main.go")]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:16]
    binary = settings.load().cache / name / digest / name
    if binary.exists():
        return binary
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        if os.environ.get("VK_FARGATE_REQUIRE_E2E") == "1":
            pytest.fail(f"Go is needed to build hack/{name}")
        pytest.skip(f"Go is needed to build hack/{name}")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f".{name}.{os.getpid()}")
    built = subprocess.run(
        [go, "build", "-o", str(partial), "."],
        cwd=source,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(f"building hack/{name} failed:\n{built.stderr[-4000:]}")
    partial.replace(binary)
    return binary
