"""Fargate's log router: each container's lines, as they come, to CloudWatch Logs.

Fargate runs Fluent Bit beside every pod, configured by ``aws-observability/aws-logging``.
We ship the lines ourselves: a pod that fargate-scheduler annotated
``Logging: LoggingEnabled`` gets, for each container and each CloudWatch output, a task
that follows the container's log through the fleet API (instance after instance, across
restarts) and feeds an ``aws.logging.Shipper``. As on Fargate, the ConfigMap is read when
a pod's shipping starts: a change applies to pods started after it. A container's lines
go to the outputs whose ``Match`` matches its tag, and its ``grep`` filters on ``log``
drop lines before they are shipped (``aws.logfilter``; counted as ``filtered`` in
``vkfargate_log_events_total``).

A restarted provider resumes each stream where CloudWatch's copy ends (its newest
millisecond, and the messages already stored at that millisecond), so restarts do not
re-send a pod's whole log. A shipper that fails for good (e.g. the log group is missing
and ``auto_create_group`` is off) records a warning event on the pod and is not retried
for that pod.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from collections.abc import AsyncIterator, Callable

from vk_fargate import errors, metrics, supervision, world
from vk_fargate.aws import logconfig, logfilter, session
from vk_fargate.aws import logging as aws_logging
from vk_fargate.fleet import backend, models
from vk_fargate.k8s import events, kube, pods
from vk_fargate.scheduler import logstate

log = logging.getLogger(__name__)
POLL = 1.0  # seconds between looks at a container that is not running
RESUME_TRIES = 5  # reads of a stream's end before shipping from the start
Key = tuple[str, str, int]  # pod UID, container, output index
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def nanos(stamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC timestamp with up to 9 digits. Pure."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC).timestamp()
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete lines of ``buffer`` (decoded, without newline) and the unfinished rest."""
    *lines, rest = buffer.split(b"\n")
    return [line.decode("utf-8", "replace") for line in lines], rest


class Seen:
    """Which lines of a container's log were already yielded, across re-reads. Pure.

    A re-read starts at the newest timestamp yielded (``since``), so it repeats the
    lines stamped with it; several lines can share one timestamp (one write of many
    lines), so the count yielded at that timestamp tells the repeats from new lines.
    """

    def __init__(self) -> None:
        self.last = 0  # nanoseconds of the newest line yielded
        self.at_last = 0  # lines yielded with that timestamp
        self._this_read = 0  # lines with that timestamp met in the current read

    def new_read(self) -> None:
        self._this_read = 0

    def fresh(self, at: int) -> bool:
        """Whether a line stamped ``at`` (met in order) is new; records it if so."""
        if at < self.last:
            return False
        if at > self.last:
            self.last, self.at_last, self._this_read = at, 1, 1
            return True
        self._this_read += 1
        if self._this_read <= self.at_last:
            return False
        self.at_last += 1
        return True


class LogRouter:
    def __init__(
        self,
        api: kube.Kube,
        fleet: backend.MicroVMs,
        state: world.World,
        recorder: events.Recorder,
        aws: session.AwsSettings,
        *,
        every: float = 2.0,
    ) -> None:
        self.api = api
        self.fleet = fleet
        self.world = state
        self.recorder = recorder
        self.aws = aws
        self.every = every
        self.tasks: dict[Key, asyncio.Task[None]] = {}
        self.started: set[str] = set()  # pod UIDs whose shipping was decided
        self.stats: dict[Key, tuple[str, aws_logging.ShipStats]] = {}  # namespace, stats
        self._counted: dict[Key, tuple[int, int, int, int]] = {}  # what metrics already have
        self._clients: dict[str, session.Client] = {}

    async def run(self) -> None:
        try:
            while True:
                await self._sync()
                await asyncio.sleep(self.every)
        finally:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def count(self) -> None:
        """Bring the log metrics up to date; forget the shippers that ended."""
        for key, (namespace, stats) in list(self.stats.items()):
            now = (
                stats.events_sent,
                stats.rejected_too_old + stats.rejected_too_new + stats.rejected_expired,
                stats.possible_duplicates,
                stats.retries,
            )
            before = self._counted.get(key, (0, 0, 0, 0))
            for n, outcome in enumerate(("shipped", "rejected", "possible_duplicate")):
                if now[n] > before[n]:
                    metrics.LOG_EVENTS.labels(namespace, outcome).inc(now[n] - before[n])
            if now[3] > before[3]:
                metrics.LOG_RETRIES.labels(namespace).inc(now[3] - before[3])
            self._counted[key] = now
            if key not in self.tasks:
                del self.stats[key], self._counted[key]

    async def _sync(self) -> None:
        self.count()
        self.started &= set(self.world.pods)
        starting = [
            (uid, pod, vm)
            for uid, pod in list(self.world.pods.items())
            if (pod["metadata"].get("annotations") or {}).get(logstate.ANNOTATION)
            == "LoggingEnabled"
            and (vm := self.world.vms.get(uid)) is not None
            and uid not in self.started
        ]
        if not starting:
            return
        config = await self._config()
        for uid, pod, vm in starting:
            self.started.add(uid)
            if config is None:
                continue
            meta = pod["metadata"]
            for c in [*vm.spec.init_containers, *vm.spec.containers]:
                tagged = logfilter.tag(
                    namespace=meta["namespace"],
                    pod=meta["name"],
                    container=c.name,
                    container_id=uid,
                )
                plan = logfilter.plan(config.parsed_filters, tagged)
                for index, output in enumerate(config.outputs):
                    if logfilter.tag_matches(output.match, tagged):
                        self._start(pod, (uid, c.name, index), output, plan)

    async def _config(self) -> logconfig.LoggingConfig | None:
        try:
            found = await pods.config_map(self.api, logconfig.NAMESPACE, logconfig.CONFIG_MAP)
            return logconfig.parse(found.get("data") or {})
        except errors.LoggingConfigInvalid as exc:
            log.warning("not shipping logs of new pods: %s", exc)
        except errors.KubeError as exc:
            if not exc.not_found:
                raise
        return None

    def _start(
        self, pod: kube.JSON, key: Key, output: logconfig.CloudWatchOutput, plan: logfilter.Plan
    ) -> None:
        meta = pod["metadata"]
        name = f"ship-logs/{meta['namespace']}/{meta['name']}/{key[1]}/{key[2]}"
        shipping = self._ship(pod, key, output, plan)
        task = asyncio.get_running_loop().create_task(shipping, name=name)
        self.tasks[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            self.tasks.pop(key, None)
            # _ship reports AWS's refusals itself: anything else is a bug, logged loudly.
            if not finished.cancelled() and finished.exception() is not None:
                log.error("%s failed", name, exc_info=finished.exception())

        task.add_done_callback(done)

    async def _logs_client(self, region: str) -> session.Client:
        if region not in self._clients:
            self._clients[region] = await session.client(self.aws, "logs", region=region)
        return self._clients[region]

    async def _ship(
        self, pod: kube.JSON, key: Key, output: logconfig.CloudWatchOutput, plan: logfilter.Plan
    ) -> None:
        """Ship one container's lines, kept by ``plan``, to ``output``."""
        meta = pod["metadata"]
        uid, container, _ = key
        try:
            shipper = aws_logging.Shipper(
                await self._logs_client(output.region),
                output,
                namespace=meta["namespace"],
                pod=meta["name"],
                container=container,
            )
            self.stats[key] = (meta["namespace"], shipper.stats)
            lines = self._lines(uid, container, await self._resume(shipper))
            if plan.greps:
                lines = _kept(lines, plan.keep, meta["namespace"])
            await shipper.run(lines)
        except errors.AwsError as exc:
            log.warning(
                "shipping %s/%s %s stopped: %s", meta["namespace"], meta["name"], container, exc
            )
            await self.recorder.record(
                pod,
                "LoggingFailed",
                f"container {container}: {exc}",
                warning=True,
                component="log-router",
            )

    async def _resume(self, shipper: aws_logging.Shipper) -> tuple[int, collections.Counter[str]]:
        """Where CloudWatch's copy ends; when it cannot be read after a few tries, from the
        start (at least once: a line twice beats a line lost)."""
        backoff = supervision.Backoff(POLL, POLL * 2 ** (RESUME_TRIES - 1), jitter=0.0)
        for _ in range(RESUME_TRIES):
            try:
                return await shipper.shipped_tail()
            except errors.AwsError as exc:
                log.warning("reading %s/%s: %s", shipper.group, shipper.stream, exc)
                await backoff.sleep()
        return 0, collections.Counter()

    async def _lines(
        self, uid: str, container: str, resume: tuple[int, collections.Counter[str]]
    ) -> AsyncIterator[tuple[int, str]]:
        """The container's lines as ``(timestamp ms, text)``, each once, until its microVM
        has ended; lines CloudWatch already holds (``resume``) are skipped."""
        resume_ms, stored = resume
        seen = Seen()
        followed: tuple[int, str] | None = None  # (restart count, state) last read to its end
        while True:
            vm = self.world.vms.get(uid)
            if vm is None:
                return
            final = vm.status.state in models.FINAL_STATES
            every = [*vm.status.init_containers, *vm.status.containers]
            status = next((c for c in every if c.name == container), None)
            started = status is not None and (status.started_at or status.restart_count)
            current = (status.restart_count, status.state) if status is not None else None
            if not started or (current == followed and not final):
                if final:
                    return
                await asyncio.sleep(POLL)
                continue
            # Again from the newest timestamp yielded (fleetd keeps microseconds).
            since = EPOCH + datetime.timedelta(microseconds=seen.last // 1000)
            seen.new_read()
            buffer = b""
            try:
                async for chunk in self.fleet.logs(
                    uid,
                    container,
                    follow=True,
                    timestamps=True,
                    since_time=since.isoformat() if seen.last else None,
                ):
                    lines, buffer = split_lines(buffer + chunk)
                    for line in lines:
                        stamp, _, text = line.partition(" ")
                        try:
                            at = nanos(stamp)
                        except ValueError:
                            continue
                        if not seen.fresh(at):
                            continue
                        ms = at // 1_000_000
                        if ms < resume_ms:
                            continue
                        if ms == resume_ms and stored[text] > 0:
                            stored[text] -= 1  # CloudWatch has this one already
                            continue
                        yield ms, text
            except errors.NotFound:
                return
            except errors.FleetError as exc:
                log.info("following %s/%s: %s; again in %.0fs", uid, container, exc, POLL)
            if final:
                return
            # Read to its end: a terminated instance needs no second look until it changes.
            followed = current if current is not None and current[1] == "terminated" else None
            await asyncio.sleep(POLL)


async def _kept(
    lines: AsyncIterator[tuple[int, str]], keep: Callable[[str], bool], namespace: str
) -> AsyncIterator[tuple[int, str]]:
    """The lines the filters keep; the others are counted as ``filtered``."""
    async for at, text in lines:
        if keep(text):
            yield at, text
        else:
            metrics.LOG_EVENTS.labels(namespace, "filtered").inc()
