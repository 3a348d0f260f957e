"""An in-memory ``backend.MicroVMs``: the fleet as the provider's reconcilers see it,
keeping each contract of the Protocol, for scenario tests that need races the real
fleetd will not produce on demand (virtual-kubelet's ``node/`` tests use such a mock
provider, kopf's tests a fake API).

- ``put_microvm`` places at once (an address, pending) and runs the containers a
  moment later; the same spec again is a no-op, another spec ``Conflict``. ``gate``
  holds puts in flight until it is set, ``boot`` placed microVMs (pending) until it
  is set: a pod deleted meanwhile.
- ``update_microvm`` applies a change of images only, restarting each changed
  container (restart count up, a new container id); any other change is ``Conflict``
  (the fleet API's contract for ``PUT /v1/microvms/{id}`` on an existing microVM).
- ``delete_microvm`` answers at once, then stopping, stopped, deleted as events;
  ``NotFound`` once it is gone.
- ``events`` follows the log of changes from a cursor, as the fleet's stream.
- ``put_volume`` swaps a files volume's content (recorded in ``volume_puts``, the
  stored spec's volume no longer pending); ``Conflict`` for an ``empty_dir`` volume or
  a microVM stopping or ended. Files' contents are write-only: never stored.
- ``lose`` forgets a microVM without a word: a fleet that lost it.

``mypy --strict tests/scenario/fakebackend.py`` checks it against the Protocol
(``implements``), as ``app.run`` passing a ``FleetClient`` to ``Provider`` checks the
client.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from vk_fargate import errors
from vk_fargate.fleet import backend, models

STEP = 0.05  # seconds between a microVM's states (placed, running; stopping, stopped)


def stored(spec: models.MicroVMSpec) -> models.MicroVMSpec:
    """What the fleet keeps of a spec: no credentials, no secret values, no files'
    contents."""
    kept = models.without_secrets(models.without_credentials(spec)[0])[0]
    return kept.model_copy(update={"volumes": [_blank(v) for v in kept.volumes]})


def _blank(volume: models.Volume) -> models.Volume:
    if volume.files is None:
        return volume
    items = [f.model_copy(update={"content": ""}) for f in volume.files.items]
    return volume.model_copy(update={"files": volume.files.model_copy(update={"items": items})})


def _without_images(spec: models.MicroVMSpec) -> models.MicroVMSpec:
    def plain(c: models.Container) -> models.Container:
        return c.model_copy(update={"image": "-", "image_pull_policy": None})

    return spec.model_copy(
        update={
            "init_containers": [plain(c) for c in spec.init_containers],
            "containers": [plain(c) for c in spec.containers],
        }
    )


class FakeMicroVMs:
    def __init__(self, *, subnet: str = "10.251") -> None:
        self.vms: dict[str, models.MicroVM] = {}
        self.log: list[models.Event] = []
        # (method, microVM id) in order; ("placed", id) when a put made one.
        self.calls: list[tuple[str, str]] = []
        self.updates: list[models.MicroVMSpec] = []  # every spec update_microvm accepted
        self.given: dict[str, models.MicroVMSpec] = {}  # each placed microVM's spec, as put
        # (microVM id, volume, files) of every put_volume accepted, contents included
        self.volume_puts: list[tuple[str, str, models.FileSet]] = []
        self.services: dict[str, models.ServiceTable] = {}  # the table put per cluster
        self.gate = asyncio.Event()  # puts wait for it
        self.gate.set()
        self.boot = asyncio.Event()  # placed microVMs wait for it to run
        self.boot.set()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []  # of its own background steps
        self._ips = (f"{subnet}.{n // 250}.{n % 250 + 2}" for n in itertools.count())
        self._ids = itertools.count(1)

    # backend.MicroVMs

    async def put_microvm(self, vm_id: str, spec: models.MicroVMSpec) -> models.MicroVM:
        self.calls.append(("put", vm_id))
        await self.gate.wait()
        existing = self.vms.get(vm_id)
        if existing is not None:
            if existing.spec != stored(spec):
                raise errors.Conflict(f"microVM {vm_id} exists with a different spec")
            return existing
        now = models.now()
        status = models.MicroVMStatus(
            state="pending",
            zone="eu-central-1a",
            subnet="subnet-fake",
            private_ip=next(self._ips),
            created_at=now,
            updated_at=now,
        )
        vm = models.MicroVM(id=vm_id, spec=stored(spec), status=status)
        self.given[vm_id] = spec
        await self._set(vm)
        self.calls.append(("placed", vm_id))
        self._later(self._run(vm_id), f"run-{vm_id}")
        return vm

    async def update_microvm(self, vm_id: str, spec: models.MicroVMSpec) -> models.MicroVM:
        self.calls.append(("update", vm_id))
        vm = self.vms.get(vm_id)
        if vm is None:  # the fleet API's PUT creates what it does not hold
            return await self.put_microvm(vm_id, spec)
        new = stored(spec)
        if _without_images(new) != _without_images(vm.spec):
            raise errors.Conflict(f"microVM {vm_id}: only containers' images can change in place")
        if new == vm.spec:
            return vm
        self.updates.append(spec)
        images = {c.name: c.image for c in new.containers}
        now = models.now()
        containers = [
            self._container(c.name, c.restart_count + 1, now)
            if images.get(c.name, "") != _image(vm.spec, c.name)
            else c
            for c in vm.status.containers
        ]
        status = vm.status.model_copy(update={"containers": containers, "updated_at": now})
        updated = vm.model_copy(update={"spec": new, "status": status})
        await self._set(updated)
        return updated

    async def delete_microvm(
        self, vm_id: str, *, grace_seconds: int | None = None
    ) -> models.MicroVM:
        self.calls.append(("delete", vm_id))
        vm = self.vms.get(vm_id)
        if vm is None:
            raise errors.NotFound(f"no microVM {vm_id}")
        if vm.status.state not in ("stopping", *models.FINAL_STATES):
            vm = await self._state(vm_id, "stopping")
            self._later(self._stop(vm_id), f"stop-{vm_id}")
        return vm

    async def put_services(self, cluster: str, table: models.ServiceTable) -> models.ServiceTable:
        self.calls.append(("put_services", cluster))
        self.services[cluster] = table
        return table

    async def put_volume(self, vm_id: str, volume: str, files: models.FileSet) -> None:
        self.calls.append(("put_volume", vm_id))
        vm = self.vms.get(vm_id)
        if vm is None:
            raise errors.NotFound(f"no microVM {vm_id}")
        found = next((v for v in vm.spec.volumes if v.name == volume), None)
        if found is None:
            raise errors.NotFound(f"microVM {vm_id} has no volume {volume}")
        if found.files is None or vm.status.state in ("stopping", *models.FINAL_STATES):
            raise errors.Conflict(f"microVM {vm_id}: volume {volume} cannot be put now")
        self.volume_puts.append((vm_id, volume, files))
        new = _blank(
            found.model_copy(update={"files": files.model_copy(update={"pending": False})})
        )
        volumes = [new if v.name == volume else v for v in vm.spec.volumes]
        spec = vm.spec.model_copy(update={"volumes": volumes})
        await self._set(vm.model_copy(update={"spec": spec}))

    async def get_microvm(self, vm_id: str) -> models.MicroVM:
        self.calls.append(("get", vm_id))
        vm = self.vms.get(vm_id)
        if vm is None:
            raise errors.NotFound(f"no microVM {vm_id}")
        return vm

    async def list_microvms(self, labels: Mapping[str, str] | None = None) -> models.MicroVMList:
        wanted = dict(labels or {})
        items = [v for v in self.vms.values() if wanted.items() <= v.spec.labels.items()]
        return models.MicroVMList(items=items, cursor=len(self.log))

    async def events(self, since: int) -> AsyncIterator[models.Event]:
        cursor = since
        while True:
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._after, cursor))
            for event in self.log[cursor:]:
                cursor = event.cursor
                yield event

    def _after(self, cursor: int) -> bool:
        return len(self.log) > cursor

    async def logs(self, vm_id: str, container: str, **options: Any) -> AsyncIterator[bytes]:
        await self.get_microvm(vm_id)
        written: tuple[bytes, ...] = ()  # the fake's containers write nothing
        for chunk in written:
            yield chunk

    async def microvm_stats(self, vm_id: str) -> models.MicroVMStats:
        await self.get_microvm(vm_id)
        raise errors.Conflict(f"microVM {vm_id}: the fake has no readings")

    async def open_exec(
        self, vm_id: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> backend.Stream:
        await self.get_microvm(vm_id)
        raise errors.Conflict(f"microVM {vm_id}: the fake runs no processes")

    async def open_attach(
        self, vm_id: str, container: str, *, stdin: bool, tty: bool
    ) -> backend.Stream:
        await self.get_microvm(vm_id)
        raise errors.Conflict(f"microVM {vm_id}: the fake runs no processes")

    async def open_port(self, vm_id: str, port: int) -> backend.Stream:
        await self.get_microvm(vm_id)
        raise errors.Conflict(f"microVM {vm_id}: the fake has no network")

    # the test's levers

    def lose(self, vm_id: str) -> None:
        """Forget ``vm_id`` without an event, as a fleet that lost it."""
        del self.vms[vm_id]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # inside

    def _container(
        self, name: str, restarts: int, now: datetime.datetime
    ) -> models.ContainerStatus:
        return models.ContainerStatus(
            name=name,
            state="running",
            started_at=now,
            restart_count=restarts,
            ready=True,  # no probes here: ready while running, as fleetd reports it
            started=True,
            container_id=f"fake://{next(self._ids)}",
            image_id=f"fake@sha256:{next(self._ids):064x}",
        )

    async def _run(self, vm_id: str) -> None:
        await asyncio.sleep(STEP)
        await self.boot.wait()
        vm = self.vms.get(vm_id)
        if vm is None or vm.status.state != "pending":
            return
        now = models.now()
        status = vm.status.model_copy(
            update={
                "state": "running",
                "started_at": now,
                "updated_at": now,
                "containers": [self._container(c.name, 0, now) for c in vm.spec.containers],
            }
        )
        await self._set(vm.model_copy(update={"status": status}))

    async def _stop(self, vm_id: str) -> None:
        await asyncio.sleep(STEP)
        await self._state(vm_id, "stopped")
        await asyncio.sleep(STEP)
        self.vms.pop(vm_id, None)
        await self._emit(type="deleted", microvm_id=vm_id)

    async def _state(self, vm_id: str, state: models.MicroVMState) -> models.MicroVM:
        vm = self.vms[vm_id]
        now = models.now()
        update: dict[str, Any] = {"state": state, "updated_at": now}
        if state == "stopped":
            update["finished_at"] = now
            update["containers"] = [
                c.model_copy(update={"state": "terminated", "exit_code": 137, "finished_at": now})
                for c in vm.status.containers
            ]
        changed = vm.model_copy(update={"status": vm.status.model_copy(update=update)})
        await self._set(changed)
        return changed

    async def _set(self, vm: models.MicroVM) -> None:
        self.vms[vm.id] = vm
        await self._emit(type="microvm", microvm=vm)

    async def _emit(self, **fields: Any) -> None:
        async with self._changed:
            event = models.Event(cursor=len(self.log) + 1, time=models.now(), **fields)
            self.log.append(event)
            self._changed.notify_all()

    def _later(self, work: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())  # type: ignore[arg-type]


def _image(spec: models.MicroVMSpec, name: str) -> str:
    return next((c.image for c in spec.containers if c.name == name), "")


def implements(fake: FakeMicroVMs) -> backend.MicroVMs:
    """The fake as the Protocol (mypy checks it keeps every signature)."""
    return fake
