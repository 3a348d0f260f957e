"""Pod volumes of the ``process`` runtime, laid out in the microVM's folder as the
kubelet lays them out under ``/var/lib/kubelet/pods/<uid>/volumes``.

Each volume is ``<vm_dir>/volumes/<name>``, bound into the containers that mount it
(``ocispec``). A ``files`` volume (configMap, secret, downwardAPI, projected; resolved
by the client) sits on a tmpfs of its own, as the kubelet keeps secret volumes off the
disk, and is written as the kubelet's AtomicWriter writes it: the files in a
timestamped folder ``..<time>.<random>``, the symlink ``..data`` to it and, for each
top-level entry, a symlink ``<entry>`` -> ``..data/<entry>``. New files come in a new
folder; ``..data_tmp`` renamed over ``..data`` swaps them at once, so a running
container sees the old set or the new one, never a mix. The contents live only there:
the spec the daemon stores, publishes and answers has them blanked (``split``). A
``pending`` volume has no ``..data`` until its files are put; the microVM's containers
wait for it (``until_ready``). An ``emptyDir`` is a folder (``medium: Memory``: a tmpfs
sized by its limit, else by the microVM's memory); a disk one's ``size_limit_mib`` is
enforced by the daemon's periodic look at its usage (``over_limit``), as the kubelet's
eviction manager does. Mounts live in the host's namespace, so they outlive a restart
of the daemon; ``remove`` unmounts and deletes all of it with the microVM.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vk_fargate import errors
from vk_fargate.fleet import models

DATA = "..data"
DATA_TMP = "..data_tmp"
MS_NOSUID, MS_NODEV = 2, 4
MNT_DETACH = 2
EMPTY_DIR_MODE = 0o777  # the kubelet's emptyDir folders are world-writable
FILES_MODE = 0o755
Files = dict[str, tuple[bytes, int]]  # path in the volume -> content, mode
_libc = ctypes.CDLL(None, use_errno=True)


def root(vm_dir: Path) -> Path:
    return vm_dir / "volumes"


def split(spec: models.MicroVMSpec) -> tuple[models.MicroVMSpec, dict[str, models.FileSet]]:
    """``spec`` with every file content blanked (what the daemon keeps), and the
    ``files`` volumes as given, by name."""
    given = {v.name: v.files for v in spec.volumes if v.files is not None}

    def blank(volume: models.Volume) -> models.Volume:
        if volume.files is None:
            return volume
        items = [i.model_copy(update={"content": ""}) for i in volume.files.items]
        return volume.model_copy(update={"files": volume.files.model_copy(update={"items": items})})

    return spec.model_copy(update={"volumes": [blank(v) for v in spec.volumes]}), given


def decode(files: models.FileSet, field: str = "items") -> Files:
    """The files of ``files`` by path, base64 decoded, each with its mode; InvalidSpec
    naming the item for bad base64 or a path given twice or both file and folder."""
    found: Files = {}
    for n, item in enumerate(files.items):
        try:
            content = base64.b64decode(item.content, validate=True)
        except (binascii.Error, ValueError):
            raise errors.InvalidSpec(
                f"{field}.{n}.content: the content of {item.path!r} is not base64",
                field=f"{field}.{n}.content",
            ) from None
        if item.path in found:
            raise errors.InvalidSpec(
                f"{field}.{n}.path: {item.path!r} is given twice", field=f"{field}.{n}.path"
            )
        found[item.path] = (content, files.default_mode if item.mode is None else item.mode)
    for path in found:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in found:
                raise errors.InvalidSpec(
                    f"{field}: {'/'.join(parts[:depth])!r} is a file and a folder of {path!r}",
                    field=field,
                )
    return found


def decode_all(spec: models.MicroVMSpec) -> dict[str, Files]:
    """``decode`` of every ``files`` volume of ``spec`` that is not pending, by name."""
    return {
        v.name: decode(v.files, f"volumes.{n}.files.items")
        for n, v in enumerate(spec.volumes)
        if v.files is not None and not v.files.pending
    }


def checked(vm: models.MicroVM, state: str, name: str, files: models.FileSet) -> Files:
    """The files of a PUT to volume ``name`` of ``vm`` (in ``state``), decoded; else
    NotFound, Conflict or InvalidSpec, as the API answers them."""
    found = [v for v in vm.spec.volumes if v.name == name]
    if not found:
        raise errors.NotFound(f"volume {name} is not in microVM {vm.id}")
    if found[0].files is None:
        raise errors.Conflict(
            f"volume {name} of microVM {vm.id} is an emptyDir; only files volumes take files"
        )
    if state == "stopping" or state in models.FINAL_STATES:
        raise errors.Conflict(f"microVM {vm.id} is {state}; its volumes can no longer change")
    if files.pending:
        raise errors.InvalidSpec(
            "pending: a PUT gives a volume its files; it cannot make it pending again",
            field="pending",
        )
    return decode(files)


def with_files(spec: models.MicroVMSpec, name: str, files: models.FileSet) -> models.MicroVMSpec:
    """``spec`` whose volume ``name`` holds ``files``, their contents blanked."""
    volumes = [v.model_copy(update={"files": files}) if v.name == name else v for v in spec.volumes]
    return split(spec.model_copy(update={"volumes": volumes}))[0]


def create(vm_dir: Path, spec: models.MicroVMSpec, contents: dict[str, Files]) -> None:
    """Make every volume of ``spec``, with the files of ``contents`` (the ready ones)."""
    if not spec.volumes:
        return
    vm_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    root(vm_dir).mkdir(mode=0o700, exist_ok=True)
    for volume in spec.volumes:
        folder = root(vm_dir) / volume.name
        folder.mkdir(exist_ok=True)
        if volume.files is not None:
            _tmpfs(folder, FILES_MODE, spec.mem_mib)
            if volume.name in contents:
                write(folder, contents[volume.name])
        elif volume.empty_dir is not None and volume.empty_dir.medium == "Memory":
            _tmpfs(folder, EMPTY_DIR_MODE, volume.empty_dir.size_limit_mib or spec.mem_mib)
        else:
            folder.chmod(EMPTY_DIR_MODE)


def _tmpfs(folder: Path, mode: int, size_mib: int) -> None:
    """A tmpfs on ``folder`` (kept if one is there); a plain folder of ``mode`` where
    none can be mounted (not root), inside the microVM's 0700 folder all the same."""
    if not os.path.ismount(folder):
        options = f"mode={mode:o},size={size_mib}m".encode()
        flags = MS_NOSUID | MS_NODEV
        _libc.mount(b"tmpfs", str(folder).encode(), b"tmpfs", flags, options)
    folder.chmod(mode)


def write(folder: Path, files: Files) -> None:
    """Swap the files of volume ``folder`` for ``files`` (the AtomicWriter's steps)."""
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    fresh = Path(tempfile.mkdtemp(prefix=stamp, dir=folder))
    fresh.chmod(FILES_MODE)
    for path, (content, mode) in sorted(files.items()):
        target = fresh / path
        for parent in reversed(target.relative_to(fresh).parents[:-1]):
            with contextlib.suppress(FileExistsError):
                (fresh / parent).mkdir()
                (fresh / parent).chmod(FILES_MODE)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            os.fchmod(out.fileno(), mode)
    link = folder / DATA_TMP
    link.unlink(missing_ok=True)
    link.symlink_to(fresh.name)
    link.rename(folder / DATA)
    wanted = {p.split("/")[0] for p in files}
    for name in sorted(wanted):
        with contextlib.suppress(FileExistsError):
            (folder / name).symlink_to(f"{DATA}/{name}")
    for entry in folder.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in (DATA, fresh.name):  # the old set, or a cut-short write
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name not in wanted and entry.is_symlink():
            entry.unlink()


def _current(folder: Path) -> str | None:
    with contextlib.suppress(OSError):
        return str((folder / DATA).readlink())
    return None


def waiting_for(vm_dir: Path, spec: models.MicroVMSpec) -> list[str]:
    """The ``files`` volumes of ``spec`` whose files have not come yet."""
    return [
        v.name
        for v in spec.volumes
        if v.files is not None and _current(root(vm_dir) / v.name) is None
    ]


async def until_ready(
    vm_dir: Path, spec: Callable[[], models.MicroVMSpec], *, cancelled: Callable[[], bool]
) -> None:
    """Return once every volume of the microVM is ready, or it is ``cancelled``."""
    while waiting_for(vm_dir, spec()) and not cancelled():
        await asyncio.sleep(0.2)


def usage(folder: Path) -> int:
    """Bytes ``folder`` takes on disk (``du``: allocated blocks, links not followed)."""
    total = 0
    with contextlib.suppress(OSError):  # a container may delete as we look
        for entry in folder.rglob("*"):
            with contextlib.suppress(OSError):
                total += entry.lstat().st_blocks * 512
    return total


def over_limit(vm_dir: Path, spec: models.MicroVMSpec) -> models.Volume | None:
    """A disk emptyDir of ``spec`` using more than its ``size_limit_mib``, if any."""
    for volume in spec.volumes:
        limit = volume.empty_dir.size_limit_mib if volume.empty_dir else None
        if limit is None or volume.empty_dir is None or volume.empty_dir.medium == "Memory":
            continue
        if usage(root(vm_dir) / volume.name) > limit * 2**20:
            return volume
    return None


def eviction_message(volume: models.Volume) -> str:
    """The kubelet's words (``emptyDirMessageFmt`` of its eviction manager)."""
    limit = volume.empty_dir.size_limit_mib if volume.empty_dir else None
    return f'Usage of EmptyDir volume "{volume.name}" exceeds the limit "{limit}Mi". '


def remove(vm_dir: Path) -> None:
    """Unmount every volume of the microVM (its files go with a tmpfs), and any subPath
    bind a shim left (``subpaths``), and delete them."""
    for folder in (vm_dir / "subpaths", root(vm_dir)):
        if not folder.is_dir():
            continue
        for mount in [*folder.glob("*/*"), *folder.iterdir()]:  # a bind on the same file
            _libc.umount2(str(mount).encode(), MNT_DETACH)  # system is no ``ismount``
        shutil.rmtree(folder, ignore_errors=True)


def mounts(
    spec: models.MicroVMSpec, container: models.Container, vm_dir: Path
) -> tuple[tuple[tuple[str, str, bool], ...], list[list[str]]]:
    """The binds of ``container``'s volume mounts (mount path, host folder, read-only),
    parents before children, and those with a ``sub_path`` for the shim to resolve at
    each start (``subpaths``). ``files`` volumes are bound read-only whatever the mount
    says, as the kubelet binds configMap, secret, downwardAPI and projected volumes."""
    kinds = {v.name: v for v in spec.volumes}
    binds = []
    sub_paths = []
    for m in sorted(container.volume_mounts, key=lambda m: m.mount_path.rstrip("/").count("/")):
        folder = str(root(vm_dir) / m.name)
        binds.append((m.mount_path, folder, m.read_only or kinds[m.name].files is not None))
        if m.sub_path:
            sub_paths.append([m.mount_path, folder, m.sub_path])
    return tuple(binds), sub_paths
