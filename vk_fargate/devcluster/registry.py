"""A real OCI registry on loopback for the local stack and the tests: Debian's
``docker-registry`` (the CNCF distribution server), filesystem storage, plain HTTP.

It is filled with the images of ``images`` under the names users write, so a pod's
``image: nginx`` is pulled from here the way containerd pulls Docker Hub through a
mirror. With ``users`` it is a private registry: Basic credentials checked against an
htpasswd file (bcrypt; the ``bcrypt`` package comes with the dev tools). Its health is
read on the debug listener, which asks for none.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import yaml

from vk_fargate.devcluster import components, images, processes

PROGRAM = "docker-registry"


@dataclasses.dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT`` (the name in image references)."""

    host: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]
    images: list[str] = dataclasses.field(default_factory=list)  # references pushed

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        processes.stop(self.process.pid, grace=10, child=self.process)


def write_config(
    root: Path,
    *,
    port: int,
    debug_port: int,
    users: dict[str, str] | None = None,
    log_level: str = "warn",
) -> Path:
    """``registry.yml`` under ``root`` (and ``htpasswd`` for ``users``)."""
    root.mkdir(parents=True, exist_ok=True)
    document: dict[str, object] = {
        "version": 0.1,
        "log": {"level": log_level},  # info: a line per request
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "debug": {"addr": f"127.0.0.1:{debug_port}"}},
    }
    if users:
        import bcrypt  # a dev tool: only tests make private registries

        htpasswd = root / "htpasswd"
        htpasswd.write_text(
            "".join(
                f"{user}:{bcrypt.hashpw(secret.encode(), bcrypt.gensalt(6)).decode()}\n"
                for user, secret in users.items()
            )
        )
        document["auth"] = {"htpasswd": {"realm": "vk-fargate", "path": str(htpasswd)}}
    path = root / "registry.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def start(
    root: Path,
    *,
    detach: bool = False,
    users: dict[str, str] | None = None,
    log_level: str = "warn",
) -> Registry:
    """Start a registry with its data under ``root`` and wait until it is healthy."""
    port, debug_port = processes.free_ports(2)
    config = write_config(root, port=port, debug_port=debug_port, users=users, log_level=log_level)
    log = root / "registry.log"
    command = components.Command(
        "registry",
        (PROGRAM, "serve", str(config)),
        f"http://127.0.0.1:{debug_port}/debug/health",
        log,
    )
    process = processes.spawn(command, detach=detach)
    try:
        await processes.wait_healthy(process, command, ssl_context=False, timeout=30)
    except BaseException:
        processes.stop(process.pid, grace=5, child=process)
        raise
    return Registry(f"127.0.0.1:{port}", root, log, process)


async def start_filled(
    root: Path, cache: Path, *, detach: bool = False, log_level: str = "warn"
) -> Registry:
    """A registry holding every local image (built once per machine, pushed here)."""
    registry = await start(root, detach=detach, log_level=log_level)
    try:
        registry.images = images.push(images.build(cache), registry.host)
    except BaseException:
        registry.stop()
        raise
    return registry
