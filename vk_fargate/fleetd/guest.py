"""What a ``microvm`` guest boots: a Debian kernel and a busybox initramfs, built once.

The kernel comes from Debian's ``linux-image-<version>-amd64`` package (fetched with
``apt-get download``, unpacked with ``dpkg -x``); its xz-compressed ``vmlinuz`` is
decompressed here into the ELF ``vmlinux`` QEMU boots directly through the PVH entry
(emulated decompression would cost seconds). The base initramfs holds busybox-static,
the virtio modules (Debian builds them as modules) and ``/init``, the guest's
supervisor. Both land in ``<cache>/microvm/<kernel-version>/`` and are reused by every
microVM on the machine; the initramfs name carries a hash of what it is built from.

Each microVM adds a small cpio of its own (``vm_initrd``): ``/vk/vm.sh`` and one
``/vk/c/<index>/run`` script per container, appended to the base archive (Linux unpacks
concatenated archives in order). The console protocol ``/init`` speaks is described in
``runtimes/microvm.py``. Standard library only: this module runs inside the shim.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import lzma
import math
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from vk_fargate.fleetd import sandbox

KERNEL_META_PACKAGE = "linux-image-amd64"
# Loaded in this order (Debian's package carries no modules.dep); only when a NIC is given.
MODULES = ("virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover", "virtio_net")
MARK = "@@vkf@@"  # starts every line of the console protocol; rare in real output
# Same defaults the process runtime gives a container.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BACKOFF_RESET_SECONDS = 600  # kubelet's: a container up this long starts back-off over
HOSTNAME_MAX = 63  # a hostname label
_APT_TIMEOUT = 600  # seconds for apt-get to fetch a ~70 MB package
_CPIO_DIR, _CPIO_FILE, _CPIO_LINK, _CPIO_CHR = 0o040000, 0o100000, 0o120000, 0o020000

INIT = r"""#!/bin/sh
# The guest's supervisor, written by vk_fargate/fleetd/guest.py; $P is MARK.
. /vk/vm.sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /run /tmp; mount -t tmpfs run /run; mount -t tmpfs tmp /tmp; mkdir -p /run/vk
echo 1 > /proc/sys/kernel/printk
stty -F /dev/console -echo 2>/dev/null
echo "$P - I"
hostname "$VK_HOSTNAME"; ip link set lo up
if [ -n "$VK_NET" ]; then
  for m in $VK_MODULES; do insmod /lib/modules/$m.ko || echo "$P - W insmod $m failed"; done
  n=0; while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
  set -- $VK_NET
  { ip link set eth0 up && ip addr add "$1" dev eth0 && ip route add default via "$2"; } \
    || echo "$P - W network setup failed"
fi
now() { read -r up _ < /proc/uptime; echo "${up%%.*}"; }
oom() { awk '$1 == "oom_kill" { print $2 }' /proc/vmstat; }
running() {  # whether a container runs: a glob, as ls fails when a file goes meanwhile
  for f in /run/vk/*.pid; do [ -e "$f" ] && return 0; done; return 1
}
stopper() {  # a host line "VKSTOP <grace seconds>": TERM, grace, KILL
  while read -r cmd grace; do
    [ "$cmd" = VKSTOP ] || continue
    case $grace in ''|*[!0-9]*) grace=$VK_GRACE_S ;; esac
    : > /run/vk/stopping
    for f in /run/vk/*.pid; do [ -e "$f" ] && kill -TERM -"$(cat "$f")" 2>/dev/null; done
    for f in /run/vk/*.sleep; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
    n=0
    while [ $n -lt $((grace * 10)) ] && running; do
      sleep 0.1; n=$((n+1))
    done
    for f in /run/vk/*.pid; do [ -e "$f" ] && kill -KILL -"$(cat "$f")" 2>/dev/null; done
  done < /dev/console
}
run_one() {  # one instance of container $1; its exit code in $rc
  d=/run/vk/$1
  if ! sh /vk/c/$1/run check; then echo "$P $1 N"; rc=128; return; fi
  rm -f $d.out $d.err; mkfifo $d.out $d.err
  awk -v p="$P $1 o " '{ print p $0; fflush() }' < $d.out & a1=$!
  awk -v p="$P $1 e " '{ print p $0; fflush() }' < $d.err & a2=$!
  o=$(oom)
  echo "$P $1 S"
  # The container writes its own pid file before it runs, so the stopper cannot miss
  # it: either the stopper's glob sees the file, or the container sees "stopping".
  setsid sh -c "echo \$\$ > $d.pid; [ -e /run/vk/stopping ] && kill -TERM \$\$
    exec sh /vk/c/$1/run" > $d.out 2> $d.err < /dev/null & c=$!
  wait $c; rc=$?
  rm -f $d.pid
  wait $a1 $a2
  killed=; [ $rc -eq 137 ] && [ "$(oom)" != "$o" ] && killed=oom
  echo "$P $1 X $rc $killed"
}
supervise() {  # container $1 of kind $2 (init/app) under the restart policy
  backoff=$VK_BACKOFF_MS
  while [ ! -e /run/vk/stopping ]; do
    t0=$(now)
    run_one $1
    [ -e /run/vk/stopping ] && return 1
    if [ $2 = init ]; then
      [ $rc -eq 0 ] && return 0
      [ $VK_POLICY = Never ] && return 1
    else
      [ $VK_POLICY = Never ] && return 0
      [ $VK_POLICY = OnFailure ] && [ $rc -eq 0 ] && return 0
    fi
    [ $(($(now) - t0)) -gt $VK_RESET_S ] && backoff=$VK_BACKOFF_MS
    echo "$P $1 R $backoff"
    sleep $((backoff / 1000)).$(printf %03d $((backoff % 1000))) & echo $! > /run/vk/$1.sleep
    wait $!; rm -f /run/vk/$1.sleep
    backoff=$((backoff * 2)); [ $backoff -gt $VK_BACKOFF_MAX_MS ] && backoff=$VK_BACKOFF_MAX_MS
  done
  return 1
}
finish() { echo "$P - D"; poweroff -f; sleep 1; echo o > /proc/sysrq-trigger; sleep 3600; }
stopper &
for i in $VK_INIT; do
  supervise $i init || { [ -e /run/vk/stopping ] || echo "$P - F $i"; finish; }
done
[ -e /run/vk/stopping ] && finish
echo "$P - A"
pids=
for i in $VK_APPS; do supervise $i app & pids="$pids $!"; done
[ -n "$pids" ] && wait $pids
finish
"""


class AssetError(Exception):
    """A guest asset could not be built; the message names the step that failed."""


@dataclasses.dataclass(frozen=True)
class Assets:
    """What every guest boots: an ELF kernel and the base (gzip'd newc) initramfs."""

    kernel_version: str
    vmlinux: Path
    initrd: Path


def default_cache() -> Path:
    """The cache the settings module names: ``$VK_FARGATE_CACHE`` or the XDG cache."""
    if value := os.environ.get("VK_FARGATE_CACHE"):
        return Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vk-fargate"


def qemu_binary() -> str:
    """Path of ``qemu-system-x86_64``, or AssetError saying which package is missing."""
    if found := shutil.which("qemu-system-x86_64"):
        return found
    raise AssetError("start QEMU: qemu-system-x86_64 not found (install qemu-system-x86)")


def busybox_binary() -> Path:
    """The static busybox, or AssetError: a dynamic one (a PT_INTERP segment, type 3)
    would find no libc in the guest."""
    for candidate in (Path("/usr/bin/busybox"), Path("/bin/busybox")):
        if candidate.is_file():
            if any(kind == 3 for kind, _, _ in _elf_segments(candidate.read_bytes())):
                raise AssetError(
                    f"build initramfs: {candidate} is dynamically linked "
                    "(apt-get install busybox-static)"
                )
            return candidate
    raise AssetError("build initramfs: busybox not found (apt-get install busybox-static)")


def latest_kernel_version() -> str:
    """The kernel ``linux-image-amd64`` depends on now, e.g. ``6.1.0-56-amd64``."""
    out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE], "find the kernel version")
    found = re.search(r"Depends: linux-image-(\S+-amd64)\b", out)
    if found is None:
        step = "find the kernel version: apt-cache knows no"
        raise AssetError(f"{step} {KERNEL_META_PACKAGE} (run apt-get update)")
    return found.group(1)


def ensure_assets(cache: Path, *, kernel_version: str | None = None) -> Assets:
    """The guest assets under ``cache``, built on first use (serialised by a file lock).

    Without ``kernel_version`` a kernel already in the cache is reused (the newest);
    apt is asked only when there is none.
    """
    root = cache / "microvm"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = kernel_version or _cached_kernel(root) or latest_kernel_version()
        home = root / version
        if not (home / "vmlinux").is_file():
            _fetch_kernel(version, home)
        initrd = _ensure_base_initrd(home)
    return Assets(version, home / "vmlinux", initrd)


def vm_initrd(assets: Assets, spec: sandbox.ShimSpec, out: Path) -> None:
    """Write ``out``: the base initramfs followed by this microVM's own archive."""
    files: dict[str, str] = {"vk/vm.sh": _vm_script(spec)}
    for index, container in enumerate([*spec["init_containers"], *spec["containers"]]):
        if container["argv"] is not None:
            files[f"vk/c/{index}/run"] = _run_script(spec, container)
    entries = [(name, _CPIO_FILE | 0o755, text.encode()) for name, text in files.items()]
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as sink:
        sink.write(assets.initrd.read_bytes())
        sink.write(gzip.compress(_newc(entries), compresslevel=1, mtime=0))
    tmp.replace(out)


def vcpus(vcpu_millis: int) -> int:
    """Whole vCPUs for a spec's ``vcpu_millis``: rounded up, at least one."""
    return max(1, math.ceil(vcpu_millis / 1000))


def _vm_script(spec: sandbox.ShimSpec) -> str:
    count = len(spec["init_containers"])
    runnable = [
        index
        for index, c in enumerate([*spec["init_containers"], *spec["containers"]])
        if c["argv"] is not None
    ]
    net = spec["network"]
    values = {
        "P": MARK,
        "VK_HOSTNAME": spec["id"][:HOSTNAME_MAX],
        "VK_POLICY": spec["restart_policy"],
        "VK_BACKOFF_MS": str(max(1, round(spec["backoff_initial_seconds"] * 1000))),
        "VK_BACKOFF_MAX_MS": str(max(1, round(spec["backoff_max_seconds"] * 1000))),
        "VK_RESET_S": str(BACKOFF_RESET_SECONDS),
        "VK_GRACE_S": str(spec["termination_grace_seconds"]),
        "VK_INIT": " ".join(str(i) for i in runnable if i < count),
        "VK_APPS": " ".join(str(i) for i in runnable if i >= count),
        "VK_NET": f"{net['ip']}/{net['prefix_len']} {net['gateway']}" if net else "",
        "VK_MODULES": " ".join(MODULES),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def _run_script(spec: sandbox.ShimSpec, container: sandbox.ShimContainer) -> str:
    """``run check`` says whether argv[0] resolves; ``run`` execs the container."""
    argv = container["argv"]
    assert argv is not None
    env = {"PATH": BASE_PATH, "HOME": "/root", "HOSTNAME": spec["id"], **container["env"]}
    workdir = container["working_dir"] or "/"
    return (
        "#!/bin/sh\n"
        f"PATH={shlex.quote(env['PATH'])}\n"
        f'if [ "$1" = check ]; then command -v -- {shlex.quote(argv[0])} >/dev/null; exit; fi\n'
        f"cd -- {shlex.quote(workdir)} 2>/dev/null || cd /\n"
        f"exec env -i {shlex.join(f'{k}={v}' for k, v in env.items())} {shlex.join(argv)}\n"
    )


def _cached_kernel(root: Path) -> str | None:
    versions = [p.parent.name for p in root.glob("*/vmlinux")]
    return max(versions, key=lambda v: [int(n) for n in re.findall(r"\d+", v)], default=None)


def _fetch_kernel(version: str, home: Path) -> None:
    """Download and unpack the kernel package into ``home``: vmlinux and modules."""
    package = f"linux-image-{version}"
    with tempfile.TemporaryDirectory(dir=home.parent, prefix=".fetch-") as scratch:
        work = Path(scratch)
        _run(["apt-get", "download", package], f"download {package} (apt-get)", cwd=work)
        debs = list(work.glob(f"{package}_*.deb"))
        if not debs:
            raise AssetError(f"download {package}: apt-get left no .deb")
        _run(["dpkg", "-x", str(debs[0]), "unpacked"], f"unpack {package} (dpkg -x)", cwd=work)
        unpacked = work / "unpacked"
        staged = work / "home"
        (staged / "modules").mkdir(parents=True)
        vmlinuz = unpacked / "boot" / f"vmlinuz-{version}"
        if not vmlinuz.is_file():
            raise AssetError(f"unpack {package}: no boot/vmlinuz-{version} in the package")
        (staged / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
        tree = unpacked / "lib" / "modules" / version
        for module in MODULES:
            found = [*tree.rglob(f"{module}.ko"), *tree.rglob(f"{module}.ko.xz")]
            if not found:
                raise AssetError(f"unpack {package}: module {module} not in the package")
            data = found[0].read_bytes()
            if found[0].suffix == ".xz":
                data = lzma.decompress(data)
            (staged / "modules" / f"{module}.ko").write_bytes(data)
        if home.exists():
            shutil.rmtree(home)
        staged.rename(home)


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The ELF kernel inside a bzImage whose payload is xz (Debian's), with a PVH note."""
    start = vmlinuz.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise AssetError("extract vmlinux: no xz stream in vmlinuz (kernel not xz-compressed?)")
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
    except lzma.LZMAError as exc:
        raise AssetError(f"extract vmlinux: xz stream unreadable: {exc}") from exc
    if not elf.startswith(b"\x7fELF\x02"):
        raise AssetError("extract vmlinux: the payload is not a 64-bit ELF")
    if not _has_pvh_note(elf):
        raise AssetError("extract vmlinux: no PVH entry note (kernel built without CONFIG_PVH)")
    return elf


def _ensure_base_initrd(home: Path) -> Path:
    busybox = busybox_binary().read_bytes()
    modules = {m: (home / "modules" / f"{m}.ko").read_bytes() for m in MODULES}
    digest = hashlib.sha256(INIT.encode() + busybox)
    for module in MODULES:
        digest.update(module.encode() + modules[module])
    path = home / f"initrd-{digest.hexdigest()[:12]}.gz"
    if path.is_file():
        return path
    mount_points = ("dev", "proc", "sys", "run", "tmp", "root", "etc")
    entries = [(d, _CPIO_DIR | 0o755, b"") for d in mount_points]
    entries.append(("bin/busybox", _CPIO_FILE | 0o755, busybox))
    for applet in _applets():
        if applet != "bin/busybox":
            entries.append((applet, _CPIO_LINK | 0o777, b"/bin/busybox"))
    entries += [(f"lib/modules/{m}.ko", _CPIO_FILE | 0o644, modules[m]) for m in MODULES]
    entries.append(("init", _CPIO_FILE | 0o755, INIT.encode()))
    entries.append(("dev/console", _CPIO_CHR | 0o600, b""))  # rdev 5:1, see _newc
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(gzip.compress(_newc(entries), compresslevel=6, mtime=0))
    tmp.replace(path)
    for stale in home.glob("initrd-*.gz"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def _applets() -> list[str]:
    out = _run([str(busybox_binary()), "--list-full"], "list busybox applets")
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})


def _newc(entries: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data), parent folders first; character devices
    are /dev/console (5:1)."""
    listed: dict[str, tuple[int, bytes]] = {}
    for name, mode, data in entries:
        for parent in reversed(Path(name).parents[:-1]):
            listed.setdefault(str(parent), (_CPIO_DIR | 0o755, b""))
        listed[name] = (mode, data)
    parts: list[bytes] = []
    items = [*((n, m, d) for n, (m, d) in listed.items()), ("TRAILER!!!", 0, b"")]
    for ino, (name, mode, data) in enumerate(items, start=1):
        rdev = (5, 1) if mode & 0o170000 == _CPIO_CHR else (0, 0)
        nlink = 2 if mode & 0o170000 == _CPIO_DIR else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, *rdev, len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        parts.append(_pad(header + name.encode() + b"\0"))
        parts.append(_pad(data))
    return b"".join(parts)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _elf_segments(elf: bytes) -> list[tuple[int, int, int]]:
    """(type, file offset, file size) of each program header of a 64-bit ELF."""
    if not elf.startswith(b"\x7fELF\x02\x01"):
        return []
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    segments = []
    for i in range(phnum):
        kind, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        segments.append((kind, offset, filesz))
    return segments


def _has_pvh_note(elf: bytes) -> bool:
    """Whether a PT_NOTE holds Xen's XEN_ELFNOTE_PHYS32_ENTRY (18), the PVH entry."""
    for kind, offset, size in _elf_segments(elf):
        if kind != 4:  # PT_NOTE
            continue
        at, end = offset, offset + size
        while at + 12 <= end:
            namesz, descsz, note = struct.unpack_from("<III", elf, at)
            name = elf[at + 12 : at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and note == 18:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _run(argv: list[str], step: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=_APT_TIMEOUT, check=False
        )
    except FileNotFoundError as exc:
        raise AssetError(f"{step}: {argv[0]} not found (a Debian host with apt?)") from exc
    except subprocess.TimeoutExpired as exc:
        raise AssetError(f"{step}: {argv[0]} took over {_APT_TIMEOUT}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise AssetError(f"{step}: {' '.join(argv)} exited {done.returncode}: {' | '.join(tail)}")
    return done.stdout
