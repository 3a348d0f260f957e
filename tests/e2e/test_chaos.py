"""The fault suite, bounded for CI: `benchmarks/chaos.py` on a dev stack of its own (two
rounds; SIGKILLs of the provider, fleetd and kube-apiserver at random moments, each
restarted with `vk-fargate dev restart --kill`). Every count it prints must be 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import vkcli
from vk_fargate.devcluster import binaries

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"


def test_restart_without_a_stack_says_so(tmp_path: Path) -> None:
    done = vkcli.run(tmp_path, "dev", "restart", "provider", "--kill")
    assert done.returncode == 1
    assert "no dev cluster is recorded" in done.stderr


def test_kills_during_churn_lose_nothing(
    control_plane_binaries: binaries.Binaries, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *("--rounds", "2", "--pods", "8", "--kills", "3", "--seed", "14"),
            *("--state-dir", str(state_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    counts = done.stdout.split("count over all rounds")[1]
    lines = re.findall(r"^  (\S.*?)\s+(\d+)$", counts, flags=re.MULTILINE)
    assert len(lines) == 11, counts
    assert all(value == "0" for _, value in lines), counts
    kills = re.search(r"kills: \{(.*)\}", done.stdout)
    assert kills is not None and sum(int(n) for n in re.findall(r": (\d+)", kills[1])) == 6
    assert re.findall(r"checked (\d+) pods", done.stdout), done.stdout
    assert not (state_dir / "dev" / "state.json").exists(), "the script stops its stack"
