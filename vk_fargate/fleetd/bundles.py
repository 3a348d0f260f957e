"""Each container of a microVM made ready to run from its image: pulled, given an OCI
bundle of its own (its root an overlay over the image's one unpacked copy, see
``rootfs``), its ``config.json`` written for runc.

The command follows Kubernetes' rules over the image's Entrypoint and Cmd; the image's
environment and working directory are the defaults the pod's override. The pod's
``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` are written here, as the
kubelet and its runtime write them (``podfiles``): the resolver the spec's ``dns``
names, or the host's own when it names none (the kubelet's ``Default``). A container whose image
cannot be had carries the reason instead (``ErrImagePull``, ``ErrImageNeverPull``,
``InvalidImageName``), in the kubelet's words.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from vk_fargate.fleet import images, models
from vk_fargate.fleetd import imagestore, ocispec, podfiles, rootfs, sandbox, volumes

RESOLV_CONF = Path("/etc/resolv.conf")


def hostname(vm: models.MicroVM) -> str:
    """The containers' hostname: the spec's (its FQDN with ``hostname_as_fqdn``), else
    the ``pod`` label cut as the kubelet cuts it."""
    return podfiles.hostname(vm.spec, default=vm.spec.labels.get("pod") or vm.id)


def pod_files(vm: models.MicroVM, vm_dir: Path) -> dict[str, str]:
    """Write the pod's /etc files under ``vm_dir``; destination -> file."""
    folder = vm_dir / "etc"
    folder.mkdir(parents=True, exist_ok=True)
    default = vm.spec.labels.get("pod") or vm.id
    ip = vm.status.private_ip or "127.0.0.1"
    (folder / "hosts").write_text(podfiles.hosts(vm.spec, ip, default=default))
    (folder / "hostname").write_text(hostname(vm) + "\n")
    try:
        host = RESOLV_CONF.read_text()
    except OSError:
        host = ""
    (folder / "resolv.conf").write_text(podfiles.resolv_conf(vm.spec.dns, host))
    return {f"/etc/{n}": str(folder / n) for n in ("hosts", "hostname", "resolv.conf")}


ERROR_SHOWN = 1.0
"""Seconds ``ErrImagePull`` shows after a failed pull before ``ImagePullBackOff``."""

Report = Callable[[list[dict[str, object]], list[dict[str, object]]], None]


async def prepare_until_pulled(
    current: Callable[[], models.MicroVM],
    vm_dir: Path,
    store: imagestore.ImageStore,
    *,
    netns: str | None,
    backoff: tuple[float, float],
    report: Report,
    cancelled: Callable[[], bool],
    credentials: Callable[[], dict[str, str]],
) -> dict[str, sandbox.ShimContainer] | None:
    """``prepare`` of the ``current`` microVM, retried with back-off while an image
    cannot be pulled (the kubelet's ``ErrImagePull`` then ``ImagePullBackOff``);
    ``report`` publishes the containers' waiting states meanwhile. A new image in the
    spec (an update in place) is tried at once, and what is returned was prepared from
    the spec ``current`` holds now. None when ``cancelled`` (the microVM is being
    deleted)."""
    delay, longest = backoff

    async def wait(seconds: float, spec: models.MicroVMSpec) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not cancelled() and current().spec == spec:
            await asyncio.sleep(min(0.2, seconds))

    while True:
        vm = current()
        prepared = await prepare(vm, vm_dir, store, netns=netns, credentials=credentials())
        if cancelled():
            return None
        if current().spec != vm.spec:
            continue  # updated while pulling: prepare the new spec (kept bundles stay)
        failing = {n for n, c in prepared.items() if c.get("reason") == "ErrImagePull"}
        if not failing:
            return prepared
        # As the kubelet: ErrImagePull as the pull fails, until its next look at the pod
        # finds the image in back-off, then ImagePullBackOff until the retry.
        report(*_waiting(vm, prepared, failing, backoff=False))
        await wait(min(ERROR_SHOWN, delay / 2), vm.spec)
        if not cancelled() and current().spec == vm.spec:
            report(*_waiting(vm, prepared, failing, backoff=True))
            await wait(delay - min(ERROR_SHOWN, delay / 2), vm.spec)
        if cancelled():
            return None
        delay = min(delay * 2, longest)


def _waiting(
    vm: models.MicroVM,
    prepared: dict[str, sandbox.ShimContainer],
    failing: set[str],
    *,
    backoff: bool,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    images_of = {c.name: c.image for c in [*vm.spec.init_containers, *vm.spec.containers]}

    def one(name: str) -> dict[str, object]:
        status: dict[str, object] = {"name": name, "state": "waiting", "restart_count": 0}
        if name not in failing:
            return {**status, "reason": "ContainerCreating"}
        if backoff:
            message = f'Back-off pulling image "{images_of[name]}"'
            return {**status, "reason": "ImagePullBackOff", "message": message}
        return {**status, "reason": "ErrImagePull", "message": prepared[name].get("error")}

    return (
        [one(c.name) for c in vm.spec.init_containers],
        [one(c.name) for c in vm.spec.containers],
    )


async def prepare(
    vm: models.MicroVM,
    vm_dir: Path,
    store: imagestore.ImageStore,
    *,
    netns: str | None,
    credentials: dict[str, str] | None = None,
) -> dict[str, sandbox.ShimContainer]:
    """Every container of ``vm``, pulled and bundled (in ``<vm_dir>/bundles/<name>``);
    by name."""
    files = pod_files(vm, vm_dir)
    return {
        c.name: await prepare_one(
            vm,
            c,
            vm_dir / "bundles" / c.name,
            store,
            files=files,
            vm_dir=vm_dir,
            netns=netns,
            credentials=(credentials or {}).get(c.name),
        )
        for c in [*vm.spec.init_containers, *vm.spec.containers]
    }


async def prepare_one(
    vm: models.MicroVM,
    c: models.Container,
    bundle: Path,
    store: imagestore.ImageStore,
    *,
    files: dict[str, str],
    vm_dir: Path,
    netns: str | None,
    credentials: str | None,
) -> sandbox.ShimContainer:
    """Container ``c`` of ``vm`` pulled and bundled in ``bundle`` (kept when it already
    holds this very image), or carrying why it cannot run."""
    ip = vm.status.private_ip or ""
    env = {e.name: e.rendered(ip) for e in c.env}
    failed = sandbox.ShimContainer(
        name=c.name, argv=None, env=env, working_dir=c.working_dir, image=c.image
    )
    policy = c.image_pull_policy or images.default_pull_policy(c.image)
    try:
        pulled = await store.ensure(c.image, policy, credentials=credentials)
    except images.InvalidImageName as exc:
        return {**failed, "reason": "InvalidImageName", "error": str(exc)}
    except imagestore.NotPresent as exc:
        return {**failed, "reason": "ErrImageNeverPull", "error": str(exc)}
    except imagestore.PullError as exc:
        message = f'failed to pull and unpack image "{c.image}": {exc.message}'
        return {**failed, "reason": "ErrImagePull", "error": message}
    try:
        command = images.expand_all(c.command, env)  # as the kubelet, from the env
        argv = images.argv(pulled.config, command, images.expand_all(c.args, env))
    except ValueError as exc:
        return {**failed, "reason": "CreateContainerError", "error": str(exc)}
    original = bundle / "config.umoci.json"
    made_from = bundle / "image.digest"  # the bundle of another image is made anew
    if not original.exists() or not made_from.exists() or made_from.read_text() != pulled.digest:
        rootfs.unmount_one(bundle)  # a half-made bundle of an earlier try
        shutil.rmtree(bundle, ignore_errors=True)
        shared = await store.unpacked(pulled)
        await asyncio.to_thread(rootfs.make, shared / "rootfs", bundle)
        shutil.copyfile(shared / "config.json", original)
        made_from.write_text(pulled.digest)
    security = c.security or models.SecurityContext()
    binds, sub_paths = volumes.mounts(vm.spec, c, vm_dir)
    container = ocispec.Container(
        argv=argv,
        env=images.environment(pulled.config, list(env.items())),
        cwd=images.working_dir(pulled.config, c.working_dir),
        hostname=hostname(vm),
        netns=netns,
        cgroups_path=None,  # the shim names one per instance
        pod_files=files,
        run_as=(security.run_as_user, security.run_as_group),
        read_only=security.read_only_root_filesystem,
        no_new_privileges=security.allow_privilege_escalation is False,
        capabilities_add=tuple(security.capabilities_add),
        capabilities_drop=tuple(security.capabilities_drop),
        seccomp=security.seccomp_profile == "RuntimeDefault",
        volumes=binds,
    )
    base = json.loads(original.read_text())
    if security.run_as_non_root and ocispec.user(base, container)[0] == 0:
        labels = vm.spec.labels
        pod = f"{labels.get('pod', vm.id)}_{labels.get('namespace', '')}({vm.id})"
        message = (
            "container has runAsNonRoot and image will run as root "
            f'(pod: "{pod}", container: {c.name})'
        )
        return {**failed, "reason": "CreateContainerConfigError", "error": message}
    spec = ocispec.spec(base, container)
    sandbox.write_json(bundle / "config.json", spec)
    if sub_paths:
        failed["sub_paths"] = sub_paths
    return {
        **failed,
        "argv": argv,
        "bundle": str(bundle),
        "image_id": pulled.reference.with_digest(pulled.digest),
        "pulled": {
            "present": pulled.present,
            "seconds": pulled.seconds,
            "size": pulled.size,
            "at": models.now().isoformat(),
        },
    }
