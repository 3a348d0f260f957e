"""Containers of a running microVM given a new image in place, as a kubelet does when a
running pod's container image changes.

The daemon stores the new spec, then ``roll`` makes the shim's ``spec.json`` follow
it: each app container whose entry was made for another image (or whose new image
could not be pulled yet) is pulled through the host's image store into a bundle of
its own (a fresh root filesystem, ``bundles/<name>.<token>``), the new entries are
written and the shim gets SIGHUP. The shim stops just those containers, with the
grace period of a stop, and starts them again from their new entries
(``runtimes.process``). A pull that fails is handed over as such: as with the kubelet,
which stops the old container before pulling, the container waits in
``ErrImagePull``, then ``ImagePullBackOff``, and the pull is retried with back-off.
Level-triggered: a further update, or a restart of the daemon, rolls again from what
the stored spec and ``spec.json`` say.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Callable

from vk_fargate import errors
from vk_fargate.fleet import models
from vk_fargate.fleetd import bundles, provision, sandbox, specdiff, supervisor

PULLING = frozenset({"ErrImagePull", "ImagePullBackOff"})
"""Reasons of an entry whose new image is still to be pulled."""


def check(
    record: provision.Record, spec: models.MicroVMSpec, *, runtime: models.RuntimeName | None
) -> None:
    """Conflict unless ``record``'s microVM can take ``spec`` in place: naming what
    differs beyond images, or why this microVM cannot change."""
    vm = record.vm
    state = "stopping" if record.deleting else vm.status.state
    if state == "stopping" or state in models.FINAL_STATES:
        raise errors.Conflict(f"microVM {vm.id} is {state}; its spec can no longer change")
    refused = specdiff.refused(vm.spec, spec)
    if refused:
        raise errors.Conflict(
            f"microVM {vm.id} is {state}; only container images can change in place "
            f"(changed: {', '.join(refused)})"
        )
    if runtime != "process":
        raise errors.Conflict(
            f"microVM {vm.id} runs on a {runtime} host, whose guest cannot take a new "
            "container image in place"
        )
    shim_spec: sandbox.ShimSpec | None = sandbox.read_json(record.dir / "spec.json")
    if shim_spec is not None and not all("image" in c for c in shim_spec["containers"]):
        # A shim of an older fleetd names no images, and would die of a SIGHUP.
        raise errors.Conflict(
            f"microVM {vm.id} was started by an older fleetd; its images cannot change in place"
        )


def live(record: provision.Record) -> bool:
    """Whether ``record``'s shim runs its containers (and so takes a SIGHUP)."""
    return (
        record.state == "running"
        and not record.deleting
        and record.shim is not None
        and supervisor.alive(record.shim)
    )


def behind(record: provision.Record) -> bool:
    """Whether some app container of the shim's ``spec.json`` is not (yet) running the
    image of ``record``'s spec: an update came as the shim was forked, or before a
    restart of the daemon."""
    spec: sandbox.ShimSpec | None = sandbox.read_json(record.dir / "spec.json")
    if spec is None:
        return False
    wanted = _long_running(record.vm.spec)
    return any(_stale(e, wanted) for e in _entries(spec))


async def roll(
    record: provision.Record,
    host: provision.Host,
    *,
    credentials: Callable[[], dict[str, str]],
) -> None:
    """Bring the shim's app containers to the images of ``record``'s spec; return when
    they are there or the microVM no longer runs."""
    delay, longest = host.cfg.restart_backoff.initial_seconds, host.cfg.restart_backoff.max_seconds
    while live(record):
        shim_spec: sandbox.ShimSpec | None = sandbox.read_json(record.dir / "spec.json")
        vm = provision.with_secrets(record)
        if shim_spec is None:
            return
        wanted = _long_running(vm.spec)
        stale = [e["name"] for e in _entries(shim_spec) if _stale(e, wanted)]
        if not stale:
            return
        files = bundles.pod_files(vm, record.dir)
        fresh = {
            name: await bundles.prepare_one(
                vm,
                wanted[name],
                record.dir / "bundles" / f"{name}.{secrets.token_hex(4)}",
                host.images,
                files=files,
                vm_dir=record.dir,
                netns=shim_spec["netns"],
                credentials=credentials().get(name),
            )
            for name in stale
        }
        if not live(record) or provision.with_secrets(record).spec != vm.spec:
            continue  # changed again while pulling: start over from the stored spec
        _hand_over(record, shim_spec, fresh)
        failing = [name for name, entry in fresh.items() if entry.get("reason") == "ErrImagePull"]
        if not failing:
            continue  # checked once more: an update may have come meanwhile
        # ErrImagePull shows from when the old instances have stopped (the kubelet's
        # pull comes after the kill), then ImagePullBackOff until the next pull.
        stopping = vm.spec.termination_grace_seconds + provision.KILL_MARGIN
        await _quiet(record, vm.spec, stopping, until=functools.partial(_waiting, record, failing))
        shown = min(bundles.ERROR_SHOWN, delay / 2)
        if await _quiet(record, vm.spec, shown):
            for name in failing:
                message = f'Back-off pulling image "{wanted[name].image}"'
                fresh[name] = {**fresh[name], "reason": "ImagePullBackOff", "error": message}
            _hand_over(record, shim_spec, fresh)
            await _quiet(record, vm.spec, delay - shown)
        delay = min(delay * 2, longest)


def _long_running(spec: models.MicroVMSpec) -> dict[str, models.Container]:
    """The containers that run for the microVM's life, by name: sidecars (init
    containers with restart_policy Always) and app containers."""
    sidecars = [c for c in spec.init_containers if c.restart_policy == "Always"]
    return {c.name: c for c in [*sidecars, *spec.containers]}


def _entries(shim_spec: sandbox.ShimSpec) -> list[sandbox.ShimContainer]:
    """The shim's entries of its sidecars and app containers."""
    names = shim_spec.get("sidecars", [])
    return [
        *(c for c in shim_spec["init_containers"] if c["name"] in names),
        *shim_spec["containers"],
    ]


def _stale(entry: sandbox.ShimContainer, wanted: dict[str, models.Container]) -> bool:
    name = entry["name"]
    return name in wanted and (
        entry.get("image", wanted[name].image) != wanted[name].image
        or entry.get("reason") in PULLING
    )


def _hand_over(
    record: provision.Record,
    shim_spec: sandbox.ShimSpec,
    fresh: dict[str, sandbox.ShimContainer],
) -> None:
    for kind in ("init_containers", "containers"):
        shim_spec[kind] = [fresh.get(c["name"], c) for c in shim_spec[kind]]
    assert record.shim is not None
    supervisor.reload(record.shim, record.dir, shim_spec)


def _waiting(record: provision.Record, names: list[str]) -> bool:
    """Whether the shim reports each of ``names`` waiting for its image."""
    waiting = {
        c.name
        for c in [*record.vm.status.init_containers, *record.vm.status.containers]
        if c.state == "waiting" and c.reason in PULLING
    }
    return waiting.issuperset(names)


async def _quiet(
    record: provision.Record,
    spec: models.MicroVMSpec,
    seconds: float,
    *,
    until: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait ``seconds`` (or ``until`` holds) unless the microVM stops or its spec
    changes; whether neither did."""
    deadline = time.monotonic() + seconds

    def same() -> bool:
        return live(record) and provision.with_secrets(record).spec == spec

    while same() and time.monotonic() < deadline and not until():
        await asyncio.sleep(min(0.2, max(seconds, 0.01)))
    return same()
