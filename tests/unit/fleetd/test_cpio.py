"""The newc writer, read back by a real cpio (busybox's, the one the guest's tools
come from): names, modes, owners, symlinks, and archives that start unaligned."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vk_fargate.fleetd import cpio

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")


def extract(archive: bytes, into: Path) -> None:
    into.mkdir()
    done = subprocess.run(
        [str(BUSYBOX), "cpio", "-i", "-d", "-m"],
        input=archive, cwd=into, capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()


def test_a_tree_comes_back_with_its_modes_links_and_owners(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "alias").symlink_to("tool")
    (root / "etc").mkdir(mode=0o750)
    (root / "etc" / "shadow").write_text("x")
    (root / "etc" / "shadow").chmod(0o600)
    (root / "empty").write_bytes(b"")
    if os.geteuid() == 0:
        os.chown(root / "etc" / "shadow", 1000, 1001)
    sink = io.BytesIO()
    writer = cpio.Writer(sink)
    writer.add_tree("vk/b/0/rootfs", root)
    writer.add("vk/vm.sh", cpio.FILE | 0o644, b"A=1\n")
    writer.close()
    assert sink.tell() % 4 == 0

    out = tmp_path / "out"
    extract(sink.getvalue(), out)
    got = out / "vk" / "b" / "0" / "rootfs"
    assert (got / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (got / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert str((got / "bin" / "alias").readlink()) == "tool"
    assert (got / "etc").stat().st_mode & 0o777 == 0o750
    assert (got / "etc" / "shadow").stat().st_mode & 0o777 == 0o600
    assert (got / "empty").read_bytes() == b""
    assert (out / "vk" / "vm.sh").read_text() == "A=1\n"
    if os.geteuid() == 0:
        shadow = (got / "etc" / "shadow").stat()
        assert (shadow.st_uid, shadow.st_gid) == (1000, 1001)


def test_pad_aligns_the_next_archive() -> None:
    sink = io.BytesIO(b"\x1f\x8b\x08")  # e.g. the end of a gzip'd archive, 3 bytes in
    sink.seek(0, io.SEEK_END)
    cpio.pad(sink)
    assert sink.tell() == 4
    assert sink.getvalue()[3:] == b"\0"
