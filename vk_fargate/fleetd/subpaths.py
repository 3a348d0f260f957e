"""A volume mount's ``sub_path``, resolved inside its volume as each container instance
starts, as the kubelet does.

The path is followed through the volume's symlinks (a ``files`` volume's ``<entry>``
-> ``..data/<entry>`` -> the current timestamped folder) but never out of the volume:
a symlink a container planted in an emptyDir, absolute or full of ``..``, resolves
inside the volume, as ``filepath-securejoin`` (the kubelet's and runc's) does. So the
container binds the file or folder the set held at its start and never sees an update,
as in Kubernetes. A missing ``sub_path`` is made as a folder with the volume's mode,
as the kubelet makes it, and bound (for runc to bind on) from a descriptor opened
without following links (``pinned``). Standard library only: this module runs inside every shim.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from collections import deque
from pathlib import Path
from typing import Any

MAX_LINKS = 255  # as securejoin: more symlinks than this is a loop
MS_BIND, MNT_DETACH = 4096, 2
_libc = ctypes.CDLL(None, use_errno=True)


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


def pinned(volume: Path, found: Path) -> int:
    """An ``O_PATH`` descriptor of ``found``, opened from ``volume`` one component at a
    time without following any link: what a container swaps in meanwhile fails it."""
    fd = os.open(volume, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in found.relative_to(volume).parts:
            below = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = below
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(f"{found} became a symbolic link")
    except BaseException:
        os.close(fd)
        raise
    return fd


def apply(
    config: dict[str, Any], sub_paths: list[list[str]], private: Path
) -> tuple[str | None, list[Path]]:
    """Point the mounts of ``config`` (runc's) at their ``sub_paths`` (``[destination,
    volume, sub_path]`` each): the kubelet's reason when one fails, and the binds made
    for them under ``private``, to ``release`` once runc has made its mounts. As the
    kubelet does, each is bound there from a descriptor ``pinned`` inside the volume
    (``/proc/self/fd/<n>``), so no link swapped in between the resolution and runc's
    mount leads out of it."""
    wanted = {destination: (volume, sub) for destination, volume, sub in sub_paths}
    held: list[Path] = []
    for mount in config.get("mounts") or []:
        if mount.get("destination") in wanted:
            volume, sub = wanted[mount["destination"]]
            try:
                target = _bind(Path(volume), prepare(Path(volume), sub), private / str(len(held)))
            except OSError as exc:
                release(held)
                return (
                    f"failed to prepare subPath for volumeMount at {mount['destination']}: {exc}",
                    [],
                )
            held.append(target)
            mount["source"] = str(target)
    return None, held


def _bind(volume: Path, found: Path, target: Path) -> Path:
    fd = pinned(volume, found)
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            target.mkdir(exist_ok=True)
        else:
            target.touch()
        source = f"/proc/self/fd/{fd}".encode()
        if _libc.mount(source, str(target).encode(), None, MS_BIND, None) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"bind {found}: {os.strerror(errno)}")
    finally:
        os.close(fd)
    return target


def release(held: list[Path]) -> None:
    """Undo the binds of ``apply`` (the container keeps its own mounts of them)."""
    for target in held:
        _libc.umount2(str(target).encode(), MNT_DETACH)
        with contextlib.suppress(OSError):
            target.rmdir() if target.is_dir() else target.unlink()
    held.clear()
