"""newc cpio archives, the format Linux unpacks as an initramfs. Standard library only.

A microVM's guest gets everything it runs this way: busybox and runc in the base
archive, each container's root filesystem (with its owners, modes, symlinks and
device nodes, as umoci unpacked them) in the microVM's own. Linux unpacks concatenated
archives in order, compressed or not; an uncompressed one must start on a 4-byte
boundary (``pad``), and costs the emulated guest no decompression.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

DIR, FILE, LINK, CHR = stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR
_CHUNK = 1 << 20


class Writer:
    """Writes one archive to ``sink``; folders are listed before what they hold."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self._ino = 0
        self._listed: set[str] = set()

    def add(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        *,
        uid: int = 0,
        gid: int = 0,
        mtime: int = 0,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        """One entry; missing parent folders are added first (root's, 0755)."""
        self._parents(name)
        self._header(name, mode, len(data), uid=uid, gid=gid, mtime=mtime, rdev=rdev)
        self._write(data)
        self._listed.add(name)

    def add_tree(self, name: str, root: Path) -> None:
        """``root`` and all it holds, as ``name/...``, with what ``lstat`` says of each.
        Hard links become copies; sockets are left out (nothing can use them)."""
        self._add_path(name, root)
        for folder, dirs, files in os.walk(root):
            base = Path(folder)
            prefix = f"{name}/{base.relative_to(root)}".removesuffix("/.")
            for child in sorted(dirs) + sorted(files):
                self._add_path(f"{prefix}/{child}", base / child)

    def close(self) -> None:
        self._header("TRAILER!!!", 0, 0)
        pad(self.sink)

    def _add_path(self, name: str, path: Path) -> None:
        info = path.lstat()
        kind = stat.S_IFMT(info.st_mode)
        uid, gid, mtime = info.st_uid, info.st_gid, int(info.st_mtime)
        if kind == stat.S_IFREG:
            self._parents(name)
            self._header(name, info.st_mode, info.st_size, uid=uid, gid=gid, mtime=mtime)
            written = 0
            with path.open("rb") as source:
                while chunk := source.read(min(_CHUNK, info.st_size - written)):
                    self.sink.write(chunk)
                    written += len(chunk)
            if written != info.st_size:  # changed while read: keep the header's promise
                self.sink.write(b"\0" * (info.st_size - written))
            self._write(b"", size=info.st_size)
            self._listed.add(name)
        elif kind == stat.S_IFLNK:
            target = str(path.readlink()).encode()
            self.add(name, info.st_mode, target, uid=uid, gid=gid, mtime=mtime)
        elif kind in (stat.S_IFDIR, stat.S_IFIFO):
            self.add(name, info.st_mode, uid=uid, gid=gid, mtime=mtime)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            rdev = (os.major(info.st_rdev), os.minor(info.st_rdev))
            self.add(name, info.st_mode, uid=uid, gid=gid, mtime=mtime, rdev=rdev)

    def _parents(self, name: str) -> None:
        for parent in reversed(Path(name).parents[:-1]):
            if str(parent) not in self._listed:
                self._listed.add(str(parent))
                self._header(str(parent), DIR | 0o755, 0)

    def _header(
        self,
        name: str,
        mode: int,
        size: int,
        *,
        uid: int = 0,
        gid: int = 0,
        mtime: int = 0,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        self._ino += 1
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (self._ino, mode, uid, gid, nlink, mtime, size, 0, 0, *rdev, len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        self._write(header + name.encode() + b"\0")

    def _write(self, data: bytes, *, size: int | None = None) -> None:
        self.sink.write(data)
        pad_to = -(len(data) if size is None else size) % 4
        self.sink.write(b"\0" * pad_to)


def pad(sink: BinaryIO) -> None:
    """NULs up to the next 4-byte boundary (Linux skips them between archives)."""
    sink.write(b"\0" * (-sink.tell() % 4))
