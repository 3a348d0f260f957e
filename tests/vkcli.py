"""`vk-fargate ...` as a user runs it, against the dev stack of a state folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(state_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VK_FARGATE_STATE_DIR": str(state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "vk_fargate.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
