"""`vk-fargate dev restart COMPONENT`: stop one component of the dev stack and start it
again with the command line and environment `dev up` recorded for it.

What a user does after changing a component, and what the fault suite does to each
(``benchmarks/chaos.py``): ``kill`` ends it with SIGKILL, as a crash or the OOM killer
would, instead of the graceful stop `dev down` uses. Note that the dev stack's fleetd
runs with ``--stop-on-exit`` (so that `dev down` leaves nothing): a graceful restart of
fleetd ends its microVMs, a killed one leaves them running for the new one to adopt.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from vk_fargate import errors
from vk_fargate.devcluster import cluster, components, processes, state

HEALTH_TIMEOUT = 90.0
NOT_RESTARTABLE = {"aws": "moto keeps the fake AWS in memory; a restart would lose it"}


def _recorded(root: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    status = state.load(root)
    if status is None:
        raise errors.HarnessError(f"restart {name}", "no dev cluster is recorded; `dev up` first")
    component = status["components"].get(name)
    if component is None:
        names = ", ".join(status["components"])
        raise errors.HarnessError(f"restart {name}", f"no such component; the stack has {names}")
    if name in NOT_RESTARTABLE:
        raise errors.HarnessError(f"restart {name}", NOT_RESTARTABLE[name])
    if "argv" not in component:
        raise errors.HarnessError(
            f"restart {name}",
            "this stack was started by an older vk-fargate that did not record command "
            "lines; `vk-fargate dev down`, then `vk-fargate dev up`",
        )
    return status, component


def _end(component: dict[str, Any], *, kill: bool) -> None:
    """Stop the component if it still runs (its whole process group)."""
    if not state.ours(component):
        return
    pid = int(component["pid"])
    if not kill:
        processes.stop(pid, grace=float(component.get("grace", 10)))
        return
    processes.kill(pid)


async def restart(root: Path, name: str, *, kill: bool = False) -> dict[str, Any]:
    """Restart component ``name`` of the dev stack under ``root``; its new record."""
    status, component = _recorded(root, name)
    await asyncio.to_thread(_end, component, kill=kill)
    command = components.Command(
        name, tuple(component["argv"]), component["health_url"], Path(component["log"])
    )
    env = {**os.environ, **component.get("env", {})}
    process = processes.spawn(command, detach=True, env=env)
    component["pid"] = process.pid
    state.save(root, status)  # recorded at once: `dev down` stops it even if it never heals
    layout = components.Layout(Path(status["root"]))
    await processes.wait_healthy(
        process, command, ssl_context=cluster.health_ssl(layout, name), timeout=HEALTH_TIMEOUT
    )
    return dict(component)
