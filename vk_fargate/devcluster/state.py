"""What ``vk-fargate dev up`` left running, kept in ``<state_dir>/dev/state.json`` so
that ``dev status`` and ``dev down`` (other processes) can find and stop it.

A PID is only signalled while it still runs the program that was recorded for it,
so a recycled PID never gets someone else's process killed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vk_fargate.devcluster import processes

STATE_FILE = "state.json"


def dev_root(state_dir: Path) -> Path:
    """The folder holding the one dev cluster of this user."""
    return state_dir / "dev"


def save(root: Path, status: dict[str, Any]) -> None:
    path = root / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, indent=2))
    tmp.replace(path)


def load(root: Path) -> dict[str, Any] | None:
    """The recorded status, or None when no dev cluster was recorded."""
    try:
        loaded: dict[str, Any] = json.loads((root / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return loaded


def ours(component: dict[str, Any]) -> bool:
    """Whether the component's recorded PID still runs the program recorded for it."""
    pid = int(component["pid"])
    return processes.alive(pid) and processes.program_of(pid) == component["program"]


def liveness(status: dict[str, Any]) -> dict[str, bool]:
    """For each recorded component, whether it is still running."""
    return {name: ours(c) for name, c in status["components"].items()}


def stop_all(status: dict[str, Any]) -> list[str]:
    """Stop every recorded component still running, last started first; their names."""
    stopped = []
    for name, component in reversed(list(status["components"].items())):
        if ours(component):
            processes.stop(int(component["pid"]), grace=float(component.get("grace", 10)))
            stopped.append(name)
    return stopped
