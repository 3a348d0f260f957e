"""The seam between the provider and what runs its microVMs, as virtual-kubelet's
``PodLifecycleHandler`` is the seam between its node controllers and a provider.

The scheduler, the pod reconciler, the fleet watch, the log router and the kubelet API
talk to ``MicroVMs``, never to the HTTP client: ``client.FleetClient`` implements it
structurally (only ``app.py`` makes one), and the scenario tests drive the real
reconcilers with an in-memory one. Each method states its contract; an implementation
that keeps them can replace the fleet.

Errors are ``errors.FleetError`` subclasses: ``NotFound`` (no such microVM: it is gone,
for good), ``Conflict`` (the id holds a different spec, or the change cannot be made in
place), ``InvalidSpec`` (a rule the spec breaks, ``field`` names it),
``InsufficientCapacity`` (no room now; try again after ``retry_after`` seconds),
``CursorExpired`` (list again), ``FleetUnavailable`` (unreachable, after the
implementation's own retries: the caller backs off and tries again). No call blocks
the event loop; each may take as long as the fleet takes to answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from vk_fargate.fleet import models


class Stream(Protocol):
    """One session of the fleet's streaming channel: an exec in a container, or a TCP
    stream to a pod port. Messages are framed as ``fleetd/streams.py`` says (a channel
    byte, then the payload), in both directions."""

    async def send(self, message: bytes) -> None:
        """Hand a message to the microVM; waits for room (back-pressure), never for the
        command to end. A session that has ended takes it and drops it."""
        ...

    async def receive(self) -> bytes | None:
        """The next message from the microVM; None once the session is over."""
        ...

    async def close(self) -> None:
        """End the session (the command is killed, the connection closed) and free it;
        may be called more than once, and after the end."""
        ...


class MicroVMs(Protocol):
    """One microVM per pod, its id the pod's UID."""

    async def put_microvm(self, vm_id: str, spec: models.MicroVMSpec) -> models.MicroVM:
        """Create microVM ``vm_id`` running ``spec``, or return it if it exists with this
        very spec: idempotent, so a retry or a restarted caller never makes a second one.
        Answers as soon as the microVM is placed (an address, a zone), before it runs;
        what follows comes as events. ``Conflict`` when ``vm_id`` exists with another
        spec (``get_microvm`` tells which)."""
        ...

    async def update_microvm(self, vm_id: str, spec: models.MicroVMSpec) -> models.MicroVM:
        """Change running microVM ``vm_id`` to ``spec`` in place, as the kubelet does a
        pod's changed container: each container whose ``image`` (or image pull fields)
        differs is stopped and started again with it (restart count up, a new container
        id), reported through events as any restart. Any other difference: ``Conflict``
        with a message saying what cannot change. The same spec again changes nothing
        (idempotent). Only for a microVM the caller knows: a ``vm_id`` the fleet no
        longer holds may be created by it (the fleet API's PUT), so callers update only
        what they hold and let the orphan path stop anything left over."""
        ...

    async def delete_microvm(
        self, vm_id: str, *, grace_seconds: int | None = None
    ) -> models.MicroVM:
        """Stop microVM ``vm_id``: SIGTERM, then SIGKILL after ``grace_seconds`` (its
        spec's when None), then forget it; the answer comes at once, the end as events
        (``stopping``, ``stopped``, then ``deleted``). May be called again, at any point:
        a repeat changes nothing. ``NotFound`` means it is gone already: the caller
        treats it as done."""
        ...

    async def put_volume(self, vm_id: str, volume: str, files: models.FileSet) -> None:
        """Replace the files of ``files`` volume ``volume`` of microVM ``vm_id`` in one
        atomic swap (its containers see the old set or the new one, never a mix); a
        pending volume becomes ready and the containers waiting on it start. Mounts
        with a ``sub_path`` keep what they had. The same files again change nothing
        the containers can see. ``NotFound`` for an unknown microVM or volume,
        ``Conflict`` for an ``empty_dir`` volume or a microVM stopping or ended,
        ``InvalidSpec`` for files the API refuses."""
        ...

    async def put_services(self, cluster: str, table: models.ServiceTable) -> models.ServiceTable:
        """Replace the Service table of every microVM labelled with ``cluster``, as
        kube-proxy replaces a node's rules: running microVMs get it at once, new ones
        before their containers start. Idempotent: the same table again changes
        nothing. ``InvalidSpec`` for a table the API refuses, ``Conflict`` for a service
        range that overlaps a network of the host."""
        ...

    async def get_microvm(self, vm_id: str) -> models.MicroVM:
        """The microVM as the fleet holds it now (its truth, not a cache of it).
        ``NotFound`` is the only answer that says it is gone."""
        ...

    async def list_microvms(self, labels: Mapping[str, str] | None = None) -> models.MicroVMList:
        """Every microVM whose labels include ``labels``, and the event cursor to follow
        from: no change after the list is missed by ``events(cursor)``."""
        ...

    def events(self, since: int) -> AsyncIterator[models.Event]:
        """The notify path: every change after cursor ``since``, in order, forever
        (reconnecting by itself). A changed microVM comes whole in its ``microvm`` event;
        a forgotten one as ``deleted``; host maintenance as ``maintenance``. Never
        blocks the loop between events; ``CursorExpired`` when ``since`` is older than
        what the fleet keeps (list again)."""
        ...

    def logs(self, vm_id: str, container: str, **options: Any) -> AsyncIterator[bytes]:
        """Container ``container``'s log as it comes (CRI format lines); ``options`` as
        the kubelet's log options in snake_case (follow, tail_lines, previous, ...).
        ``NotFound`` for an unknown microVM or container."""
        ...

    async def microvm_stats(self, vm_id: str) -> models.MicroVMStats:
        """CPU, memory and network of a running microVM now; ``Conflict`` when it is not
        running, ``NotFound`` when it is gone."""
        ...

    async def open_exec(
        self, vm_id: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> Stream:
        """Run ``command`` in running container ``container`` of microVM ``vm_id``, as
        its user, with its environment, in its namespaces and root: the session's
        channels carry stdin (when ``stdin``), stdout and stderr (one terminal when
        ``tty``), resizes, and last the outcome. ``NotFound`` for an unknown microVM or
        container, ``Conflict`` when it is not running, ``FleetUnavailable`` when the
        fleet has no room for another session."""
        ...

    async def open_attach(self, vm_id: str, container: str, *, stdin: bool, tty: bool) -> Stream:
        """Attach to running container ``container`` of microVM ``vm_id`` (its process's
        own stdio, as ``kubectl attach``): output from now on (stdout and stderr apart,
        or one terminal when the container has ``tty``; the container decides, not
        ``tty``), stdin when ``stdin`` (``BadRequest`` when the container has none),
        resizes, and last the instance's exit code. ``NotFound`` for an unknown microVM
        or container, ``Conflict`` when it is not running."""
        ...

    async def open_port(self, vm_id: str, port: int) -> Stream:
        """A TCP connection to ``port`` inside microVM ``vm_id``'s network namespace (its
        loopback: what listens only there is reached too; nothing outside the pod is).
        A refused connect is the session's error message, not an exception."""
        ...
