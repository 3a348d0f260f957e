"""A volume mount's ``sub_path``, resolved inside its volume as each container instance
starts, as the kubelet does.

The path is followed through the volume's symlinks (a ``files`` volume's ``<entry>``
-> ``..data/<entry>`` -> the current timestamped folder) but never out of the volume:
a symlink a container planted in an emptyDir, absolute or full of ``..``, resolves
inside the volume, as ``filepath-securejoin`` (the kubelet's and runc's) does. So the
container binds the file or folder the set held at its start and never sees an update,
as in Kubernetes. A missing ``sub_path`` is made as a folder with the volume's mode,
as the kubelet makes it. Standard library only: this module runs inside every shim.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

MAX_LINKS = 255  # as securejoin: more symlinks than this is a loop


def resolve(volume: Path, sub_path: str) -> Path:
    """``sub_path`` inside ``volume`` with every symlink followed within it."""
    done: list[str] = []
    todo = deque(sub_path.split("/"))
    links = 0
    while todo:
        part = todo.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = volume.joinpath(*done, part)
        if not here.is_symlink():
            done.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(f"subPath {sub_path!r}: too many levels of symbolic links")
        target = str(here.readlink())
        if target.startswith("/"):
            done = []
        todo.extendleft(reversed(target.split("/")))
    return volume.joinpath(*done)


def prepare(volume: Path, sub_path: str) -> Path:
    """The host path to bind for ``sub_path`` of ``volume``, made when missing."""
    found = resolve(volume, sub_path)
    if not found.exists() and not found.is_symlink():
        found.mkdir(parents=True, exist_ok=True)
        found.chmod(volume.stat().st_mode & 0o7777)
        found = resolve(volume, sub_path)  # and again: nothing may have slipped in
    return found


def apply(config: dict[str, Any], sub_paths: list[list[str]]) -> str | None:
    """Point the mounts of ``config`` (runc's) at their resolved ``sub_paths``
    (``[destination, volume, sub_path]`` each); the kubelet's reason when one fails."""
    wanted = {destination: (volume, sub) for destination, volume, sub in sub_paths}
    for mount in config.get("mounts") or []:
        if mount.get("destination") in wanted:
            volume, sub = wanted[mount["destination"]]
            try:
                mount["source"] = str(prepare(Path(volume), sub))
            except OSError as exc:
                return f"failed to prepare subPath for volumeMount at {mount['destination']}: {exc}"
    return None
