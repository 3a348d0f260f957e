"""What a ``microvm`` guest boots: a Debian kernel, busybox and runc, built once.

The kernel comes from Debian's ``linux-image-<version>-amd64`` package (fetched with
``apt-get download``, unpacked with ``dpkg -x``); its xz-compressed ``vmlinuz`` is
decompressed here into the ELF ``vmlinux`` QEMU boots directly through the PVH entry
(emulated decompression would cost seconds). The base initramfs holds busybox-static,
the virtio modules (Debian builds them as modules), runc with the libraries it links,
the guest agent (``guestagent.py``) and ``/init``, the guest's supervisor. Both land
in ``<cache>/microvm/<kernel-version>/`` and are reused by every microVM on the
machine; the initramfs name carries a hash of what it is built from.

Each microVM adds an archive of its own (``vm_initrd``): ``/vk/vm.sh`` and one OCI
bundle per container, ``/vk/b/<index>``, holding the image's root filesystem as fleetd
unpacked it and the container's ``config.json`` made for the guest. ``/init`` runs each
with ``runc run --no-pivot`` (an initramfs cannot be pivoted away from), as Fargate's
guest runs its containers with runc: the same namespaces, user, capabilities and
read-only root as the process runtime. The console protocol ``/init`` speaks is
described in ``runtimes/microvm.py``. Standard library only: this module runs inside
the shim.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from vk_fargate.fleetd import cpio, guestagent, ocispec, sandbox

KERNEL_META_PACKAGE = "linux-image-amd64"
# Loaded in this order (Debian's package carries no modules.dep): the virtio core and the
# console (the agent's virtio-serial port) always, the NIC's only when a NIC is given.
CORE_MODULES = ("virtio_ring", "virtio", "virtio_mmio", "virtio_console")
NET_MODULES = ("failover", "net_failover", "virtio_net")
MODULES = CORE_MODULES + NET_MODULES
AGENT_PORT = "vk.agent"  # the virtserialport the guest agent serves (see agentmux.py)
MARK = "@@vkf@@"  # starts every line of the console protocol; rare in real output
BACKOFF_RESET_SECONDS = 600  # kubelet's: a container up this long starts back-off over
HOSTNAME_MAX = 63  # a hostname label
_APT_TIMEOUT = 600  # seconds for apt-get to fetch a ~70 MB package

INIT = r"""#!/bin/sh
# The guest's supervisor, written by vk_fargate/fleetd/guest.py; $P is MARK.
. /vk/vm.sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts; mount -t devpts -o ptmxmode=0666 devpts /dev/pts
mkdir -p /run /tmp; mount -t tmpfs run /run; mount -t tmpfs tmp /tmp; mkdir -p /run/vk
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo 1 > /proc/sys/kernel/printk
stty -F /dev/console -echo 2>/dev/null
echo "$P - I"
hostname "$VK_HOSTNAME"; ip link set lo up
for m in $VK_CORE_MODULES; do insmod /lib/modules/$m.ko || echo "$P - W insmod $m failed"; done
/bin/vk-agent > /dev/console 2>&1 < /dev/null &  # exec and port sessions (agentmux.py)
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
  rm -f $d.out $d.err; mkfifo $d.out $d.err
  awk -v p="$P $1 o " '{ print p $0; fflush() }' < $d.out & a1=$!
  awk -v p="$P $1 e " '{ print p $0; fflush() }' < $d.err & a2=$!
  o=$(oom)
  echo "$P $1 S"
  # The container writes its own pid file before it runs, so the stopper cannot miss
  # it: either the stopper's glob sees the file, or the container sees "stopping".
  setsid sh -c "echo \$\$ > $d.pid; [ -e /run/vk/stopping ] && kill -TERM \$\$
    exec runc --root /run/runc run --no-pivot --bundle /vk/b/$1 vk$1" \
    > $d.out 2> $d.err < /dev/null & c=$!
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
        have = [home / "vmlinux", *(home / "modules" / f"{m}.ko" for m in MODULES)]
        if not all(path.is_file() for path in have):
            _fetch_kernel(version, home)
        try:
            agent = guestagent.binary(cache)
        except guestagent.BuildError as exc:
            raise AssetError(str(exc)) from exc
        initrd = _ensure_base_initrd(home, agent)
    return Assets(version, home / "vmlinux", initrd)


def vm_initrd(assets: Assets, spec: sandbox.ShimSpec, out: Path) -> None:
    """Write ``out``: the base initramfs followed by this microVM's own archive, which
    holds ``/vk/vm.sh``, each container's bundle as ``/vk/b/<index>`` (``guest_config``
    and the image's root filesystem) and the pod's ``/etc`` files as ``/vk/etc``."""
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as sink:
        sink.write(assets.initrd.read_bytes())
        cpio.pad(sink)
        archive = cpio.Writer(sink)
        archive.add("vk/vm.sh", cpio.FILE | 0o755, _vm_script(spec).encode())
        pod_files: dict[str, str] = {}
        for index, container in enumerate([*spec["init_containers"], *spec["containers"]]):
            if "bundle" not in container:
                continue
            bundle = Path(container["bundle"])
            config = sandbox.read_json(bundle / "config.json")
            for mount in config.get("mounts") or []:
                if mount.get("destination") in ocispec.POD_FILES:
                    pod_files[Path(mount["destination"]).name] = mount["source"]
            text = json.dumps(guest_config(config, index)).encode()
            archive.add(f"vk/b/{index}/config.json", cpio.FILE | 0o644, text)
            archive.add_tree(f"vk/b/{index}/rootfs", bundle / "rootfs")
        for name, source in sorted(pod_files.items()):
            archive.add(f"vk/etc/{name}", cpio.FILE | 0o644, Path(source).read_bytes())
        archive.close()
    tmp.replace(out)


def guest_config(config: dict[str, Any], index: int) -> dict[str, Any]:
    """A bundle's ``config.json`` as runc runs it inside the guest. The microVM is the
    pod's sandbox: its containers share the guest's network namespace (no netns of the
    host's), get a cgroup each under the guest's root, and bind the pod's ``/etc`` files
    from ``/vk/etc``."""
    out = copy.deepcopy(config)
    linux = out.setdefault("linux", {})
    namespaces = linux.get("namespaces") or []
    linux["namespaces"] = [n for n in namespaces if n.get("type") != "network"]
    linux["cgroupsPath"] = f"/vk/{index}"
    for mount in out.get("mounts") or []:
        if mount.get("destination") in ocispec.POD_FILES:
            mount["source"] = f"/vk/etc/{Path(mount['destination']).name}"
    out.setdefault("root", {})["path"] = "rootfs"
    return out


def vcpus(vcpu_millis: int) -> int:
    """Whole vCPUs for a spec's ``vcpu_millis``: rounded up, at least one."""
    return max(1, math.ceil(vcpu_millis / 1000))


def _vm_script(spec: sandbox.ShimSpec) -> str:
    count = len(spec["init_containers"])
    runnable = [
        index
        for index, c in enumerate([*spec["init_containers"], *spec["containers"]])
        if "bundle" in c
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
        "VK_CORE_MODULES": " ".join(CORE_MODULES),
        "VK_MODULES": " ".join(NET_MODULES),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


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


def _ensure_base_initrd(home: Path, agent: Path) -> Path:
    """busybox, the modules and ``/init`` (gzip'd), then runc with the libraries it
    links and the guest agent (uncompressed: 14 MB the emulated guest need not
    decompress)."""
    busybox = busybox_binary().read_bytes()
    modules = {m: (home / "modules" / f"{m}.ko").read_bytes() for m in MODULES}
    runtime = {**runc_files(), "bin/vk-agent": agent.read_bytes()}
    digest = hashlib.sha256(INIT.encode() + busybox)
    for name, data in [*modules.items(), *runtime.items()]:
        digest.update(name.encode() + data)
    path = home / f"initrd-{digest.hexdigest()[:12]}.img"
    if path.is_file():
        return path
    core = io.BytesIO()
    archive = cpio.Writer(core)
    for folder in ("dev", "proc", "sys", "run", "tmp", "root", "etc"):
        archive.add(folder, cpio.DIR | 0o755)
    archive.add("bin/busybox", cpio.FILE | 0o755, busybox)
    for applet in _applets():
        if applet != "bin/busybox":
            archive.add(applet, cpio.LINK | 0o777, b"/bin/busybox")
    for module in MODULES:
        archive.add(f"lib/modules/{module}.ko", cpio.FILE | 0o644, modules[module])
    archive.add("init", cpio.FILE | 0o755, INIT.encode())
    archive.add("dev/console", cpio.CHR | 0o600, rdev=(5, 1))
    archive.close()
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as sink:
        sink.write(gzip.compress(core.getvalue(), compresslevel=6, mtime=0))
        cpio.pad(sink)
        archive = cpio.Writer(sink)
        for name, data in runtime.items():
            archive.add(name, cpio.FILE | 0o755, data)
        archive.close()
    tmp.replace(path)
    for stale in [*home.glob("initrd-*.gz"), *home.glob("initrd-*.img")]:
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def runc_files() -> dict[str, bytes]:
    """runc and the shared libraries it links, by their paths in the guest (the host's)."""
    runc = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/sbin")
    if runc is None:
        raise AssetError("build initramfs: runc not found (apt-get install runc)")
    out = _run(["ldd", runc], "list runc's libraries (ldd)")
    files = {"usr/sbin/runc": Path(runc).read_bytes()}
    for line in out.splitlines():
        found = re.search(r"(/\S+) \(0x", line)
        if found:
            library = Path(found.group(1))
            files[str(library).lstrip("/")] = library.read_bytes()  # through symlinks
    return files


def _applets() -> list[str]:
    out = _run([str(busybox_binary()), "--list-full"], "list busybox applets")
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})


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
