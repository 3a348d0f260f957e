"""What the process runtime runs for a container, since images cannot be pulled here.

Docker's rules, with the fleet's image table standing in for image metadata: the
container's ``command`` replaces the image's entrypoint and ``args`` its default
arguments. An image with a ``multicall`` binary (busybox) runs bare command names
through it, as the real image would (``sh`` is busybox's sh, not the host's). A
container with no command whose image is not in the table cannot run: the result
says why, in words a user can act on. Pure.
"""

from __future__ import annotations

import dataclasses

from vk_fargate.fleet import models
from vk_fargate.fleetd import config


@dataclasses.dataclass(frozen=True)
class Resolved:
    argv: list[str] | None
    error: str | None = None


def repository(image: str) -> str:
    """``docker.io/library/nginx:1.25@sha256:..`` -> ``nginx``; keeps other paths."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # a registry host
    if parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts)


def lookup(image: str, table: dict[str, config.Image]) -> config.Image | None:
    """The table entry for ``image``: by repository, then by its last path part."""
    repo = repository(image)
    return table.get(repo) or table.get(repo.rsplit("/", 1)[-1])


def resolve(
    container: models.Container, table: dict[str, config.Image], *, sandbox: str
) -> Resolved:
    """The argv to run ``container`` with; ``{sandbox}`` in table entries is expanded."""
    entry = lookup(container.image, table)
    if container.command:
        argv = [*container.command, *container.args]
        if entry is not None and entry.multicall and "/" not in argv[0]:
            argv = [entry.multicall, *argv]
        return Resolved(argv)
    if entry is None:
        return Resolved(
            None,
            f"image {container.image!r} cannot be pulled here: it is not in the fleet's "
            "image table and the container sets no command",
        )
    base = [part.replace("{sandbox}", sandbox) for part in entry.command]
    args = container.args or [part.replace("{sandbox}", sandbox) for part in entry.args]
    return Resolved([*base, *args])
