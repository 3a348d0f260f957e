"""A container's root filesystem over its image's shared, read-only unpacked copy.

Each image is unpacked once per host (``imagestore.ImageStore.unpacked``); a container
gets an overlayfs of its own on top: that copy as the lower layer, its writes in
``<bundle>/upper``, as containerd's overlayfs snapshotter does. A second pod of an
image costs no unpacking and almost no disk. Where overlayfs cannot be mounted (not
root, no overlay module, a path overlayfs options cannot spell) the copy is copied
instead, and ``shared`` says which happened. ``unmount`` is safe to call on anything.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def make(lower: Path, bundle: Path) -> bool:
    """``bundle/rootfs`` over ``lower``: an overlay (True) or a copy (False)."""
    target, upper, work = bundle / "rootfs", bundle / "upper", bundle / "work"
    for folder in (target, upper, work):
        folder.mkdir(parents=True, exist_ok=True)
    paths = (str(lower), str(upper), str(work))
    if os.geteuid() == 0 and not any(c in p for p in paths for c in ",:"):
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if _mount("overlay", str(target), "overlay", options) == 0:
            return True
    shutil.rmtree(upper, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    # cp -a keeps owners (as root), modes, links and devices, as the unpacked copy has.
    subprocess.run(["cp", "-a", f"{lower}/.", str(target)], check=True, capture_output=True)
    return False


def unmount(bundles: Path) -> None:
    """Detach every container root under ``bundles`` (``<vm>/bundles``) still mounted."""
    if bundles.is_dir():
        for bundle in bundles.iterdir():
            unmount_one(bundle)


def unmount_one(bundle: Path) -> None:
    """Detach ``bundle/rootfs`` if it is mounted."""
    root = bundle / "rootfs"
    if os.path.ismount(root):
        _libc.umount2(str(root).encode(), MNT_DETACH)


def _mount(source: str, target: str, kind: str, options: str) -> int:
    result: int = _libc.mount(source.encode(), target.encode(), kind.encode(), 0, options.encode())
    return 0 if result == 0 else ctypes.get_errno()
