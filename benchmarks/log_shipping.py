"""Benchmark: shipping one container's log to CloudWatch Logs, as the log router does.

Usage: python benchmarks/log_shipping.py [--lines 100000] [--timeout 600]

Starts moto's server (``aws.devaws``, the fake AWS) and its own fleetd on loopback, then
one busybox microVM whose container waits a second (so the follow is already open),
prints ``--lines`` lines (``seq | sed``, as fast as it can) and sleeps. The log is
followed as ``controllers.logrouter.LogRouter._lines`` does (``FleetClient.logs`` with
follow and timestamps, ``split_lines``, ``nanos``, the same resume and same-timestamp
rules) and fed to an ``aws.logging.Shipper`` (default flush interval, auto_create_group)
until every line is acknowledged or the timeout passes. The logs client is wrapped to
note when each PutLogEvents is answered.

Prints: lines, the seconds from the container's first line timestamp to the last batch
acknowledged and the lines/s that makes, batches and mean events per batch, retries
(the shipper's and botocore's own), the latency from a line's timestamp to its batch's
acknowledgement (the very first line; p50/p99 over batches of each batch's first line),
the peak RSS of this process and of moto's server. Then reads the stream back
(GetLogEvents, following nextForwardToken) and checks that every line arrived exactly
once and in order: a FAIL line and exit status 1 otherwise. The microVM, fleetd and
moto are removed/stopped in any case.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import math
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import procstat  # benchmarks/procstat.py, beside this script

from vk_fargate import errors, settings
from vk_fargate.aws import devaws, logconfig, session
from vk_fargate.aws import logging as aws_logging
from vk_fargate.controllers import logrouter
from vk_fargate.devcluster import fleet as devfleet
from vk_fargate.fleet import client, models

VM_ID = "bench-log-shipping"
CONTAINER = "talker"
NAMESPACE = "bench"
GROUP = "/vk-fargate/benchmark"
START_DELAY = 1  # seconds the container waits before printing, so the follow is open
POLL = 0.05  # seconds between looks at the microVM / at the shipper's progress


def _spec(lines: int) -> models.MicroVMSpec:
    script = f"sleep {START_DELAY}; seq 1 {lines} | sed 's/^/line /'; exec sleep 3600"
    return models.MicroVMSpec(
        vcpu_millis=1000,
        mem_mib=512,
        restart_policy="Never",
        termination_grace_seconds=0,
        labels={"benchmark": "log_shipping"},
        containers=[
            models.Container(name=CONTAINER, image="busybox", command=["sh", "-c", script])
        ],
    )


@dataclasses.dataclass(frozen=True)
class Ack:
    """One PutLogEvents that CloudWatch answered 200."""

    sent: float  # wall-clock seconds when the call began
    at: float  # wall-clock seconds when it was answered
    first_ms: int  # timestamp of the batch's first event
    last_ms: int  # timestamp of its last event
    events: int
    retry_attempts: int  # botocore's own retries inside this call


class TimedLogs:
    """A CloudWatch Logs client noting when each PutLogEvents is acknowledged.

    Everything else goes to the wrapped client unchanged. Called from the shipper's
    worker threads; ``list.append`` is atomic.
    """

    def __init__(self, logs: Any) -> None:
        self._logs = logs
        self.acks: list[Ack] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logs, name)

    def put_log_events(self, **kwargs: Any) -> Any:
        sent = time.time()
        answer = self._logs.put_log_events(**kwargs)
        at = time.time()
        events = kwargs["logEvents"]
        retried = int(answer.get("ResponseMetadata", {}).get("RetryAttempts", 0))
        first, last = int(events[0]["timestamp"]), int(events[-1]["timestamp"])
        self.acks.append(Ack(sent, at, first, last, len(events), retried))
        return answer


@dataclasses.dataclass
class Reading:
    """What following the log saw."""

    read: int = 0  # complete lines read from fleetd
    yielded: int = 0  # handed to the shipper
    unparsed: int = 0  # no timestamp: skipped, as the router does
    not_newer: int = 0  # already yielded (an earlier read of the same timestamp): skipped
    resumed: int = 0  # already in CloudWatch: skipped
    reconnects: int = 0
    first_ns: int | None = None  # timestamp of the first line handed to the shipper
    last_ns: int = 0
    last_read_at: float = 0.0  # wall-clock seconds when the latest chunk was read


async def _follow(
    api: client.FleetClient,
    reading: Reading,
    resume: tuple[int, collections.Counter[str]],
) -> AsyncIterator[tuple[int, str]]:
    """``LogRouter._lines`` for one container instance that outlives the benchmark: the
    same follow, split, parse, same-timestamp and resume rules; counts what it skips."""
    resume_ms, stored = resume
    seen = logrouter.Seen()
    while True:
        since = logrouter.EPOCH + datetime.timedelta(microseconds=seen.last // 1000)
        seen.new_read()
        buffer = b""
        try:
            async for chunk in api.logs(
                VM_ID,
                CONTAINER,
                follow=True,
                timestamps=True,
                since_time=since.isoformat() if seen.last else None,
            ):
                reading.last_read_at = time.time()
                lines, buffer = logrouter.split_lines(buffer + chunk)
                for line in lines:
                    reading.read += 1
                    stamp, _, text = line.partition(" ")
                    try:
                        at = logrouter.nanos(stamp)
                    except ValueError:
                        reading.unparsed += 1
                        continue
                    if not seen.fresh(at):
                        reading.not_newer += 1
                        continue
                    ms = at // 1_000_000
                    if ms < resume_ms:
                        reading.resumed += 1
                        continue
                    if ms == resume_ms and stored[text] > 0:
                        stored[text] -= 1
                        reading.resumed += 1
                        continue
                    if reading.first_ns is None:
                        reading.first_ns = at
                    reading.last_ns = at
                    reading.yielded += 1
                    yield ms, text
        except errors.NotFound:
            return
        except errors.FleetError:
            reading.reconnects += 1
        await asyncio.sleep(logrouter.POLL)


async def _wait_started(api: client.FleetClient, timeout: float) -> None:
    """Until the container has started (the router's condition), polling quickly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        vm = await api.get_microvm(VM_ID)
        status = next((c for c in vm.status.containers if c.name == CONTAINER), None)
        if status is not None and (status.started_at or status.restart_count):
            return
        if vm.status.state in models.FINAL_STATES:
            raise RuntimeError(f"microVM {vm.status.state}: {vm.status.message}")
        await asyncio.sleep(POLL)
    raise TimeoutError(f"container not started after {timeout:.0f}s")


def _read_back(logs: Any, stream: str) -> list[str]:
    """Every message of the stream, oldest first, page after page."""
    messages: list[str] = []
    token: str | None = None
    while True:
        options: dict[str, Any] = {"nextToken": token} if token else {}
        answer = logs.get_log_events(
            logGroupName=GROUP, logStreamName=stream, startFromHead=True, **options
        )
        events = answer.get("events") or []
        if not events:
            return messages
        messages += [str(e["message"]) for e in events]
        token = answer["nextForwardToken"]


def _percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _check(messages: list[str], lines: int) -> str | None:
    """None when ``messages`` are line 1..lines exactly once in order, else what is wrong."""
    expected = [f"line {i}" for i in range(1, lines + 1)]
    if messages == expected:
        return None
    counts = collections.Counter(messages)
    missing = sum(1 for m in expected if counts[m] == 0)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    known = set(expected)
    foreign = sum(1 for m in messages if m not in known)
    first_seen = list(dict.fromkeys(m for m in messages if m in known))
    in_order = first_seen == [m for m in expected if counts[m]]
    where = next(
        (i for i, (got, want) in enumerate(zip(messages, expected, strict=False)) if got != want),
        min(len(messages), len(expected)),
    )
    return (
        f"{len(messages)} events for {lines} lines: {missing} missing, {duplicated} "
        f"duplicated, {foreign} unexpected, {'in' if in_order else 'out of'} order; "
        f"first difference at index {where}"
    )


async def _bench(api: client.FleetClient, aws: devaws.DevAws, lines: int, timeout: float) -> bool:
    settings = session.AwsSettings(
        enabled=True, region=aws.world["region"], endpoint_url=aws.endpoint_url
    )
    raw = await asyncio.to_thread(
        session.make_client, settings, "logs", credentials=("testing", "testing")
    )
    logs = TimedLogs(raw)
    output = logconfig.CloudWatchOutput(
        plugin="cloudwatch_logs",
        match="*",
        region=aws.world["region"],
        log_group_name=GROUP,
        log_stream_prefix="from-fluent-bit-",
        log_stream_name=None,
        auto_create_group=True,
    )
    shipper = aws_logging.Shipper(logs, output, namespace=NAMESPACE, pod=VM_ID, container=CONTAINER)
    reading = Reading()

    await api.put_microvm(VM_ID, _spec(lines))
    await _wait_started(api, timeout=60)
    resume = await shipper.shipped_tail()
    shipping = asyncio.create_task(shipper.run(_follow(api, reading, resume)))
    stats = shipper.stats
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while not (
            stats.events_sent >= lines
            or (reading.read >= lines and stats.events_sent >= reading.yielded)
        ):
            if shipping.done():
                shipping.result()  # raises what stopped it
                raise RuntimeError("the shipper ended before every line was acknowledged")
            if time.monotonic() > deadline:
                timed_out = True
                break
            await asyncio.sleep(POLL)
    finally:
        shipping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shipping

    acks = list(logs.acks)
    if not acks or reading.first_ns is None:
        print(f"FAIL: nothing acknowledged within {timeout:g}s ({reading.read} lines read)")
        return False
    first_s = reading.first_ns / 1e9
    total = acks[-1].at - first_s
    written = (reading.last_ns - reading.first_ns) / 1e9
    botocore_retries = sum(a.retry_attempts for a in acks)
    batch_first = [a.at - a.first_ms / 1000 for a in acks]
    batch_last = [a.at - a.last_ms / 1000 for a in acks]
    calls = [a.at - a.sent for a in acks]
    own_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    moto_kib = procstat.status_kib(aws.process.pid, "VmHWM")

    print(
        f"lines                          {lines} written, {reading.read} read, "
        f"{reading.yielded} to the shipper, {stats.events_sent} acknowledged"
        + (f" (TIMED OUT after {timeout:g}s)" if timed_out else "")
    )
    if reading.unparsed or reading.not_newer or reading.resumed or reading.reconnects:
        print(
            f"skipped by the router's rules  {reading.not_newer} already read, "
            f"{reading.unparsed} unparsed, {reading.resumed} resumed; "
            f"{reading.reconnects} reconnects"
        )
    print(
        f"container wrote them in        {written:6.2f}s "
        f"({reading.yielded / max(written, 1e-9):8.0f} lines/s, by their timestamps)"
    )
    print(
        f"first line -> last line read   {reading.last_read_at - first_s:6.2f}s "
        "(the shipper's queue pushes back while a batch is in flight)"
    )
    print(
        f"first line -> last batch acked {total:6.2f}s "
        f"({stats.events_sent / total:8.0f} lines/s shipped)"
    )
    print(
        f"batches                        {stats.batches} "
        f"(mean {stats.events_sent / max(stats.batches, 1):.0f} events per batch; "
        f"flush interval {shipper.flush_interval:.1f}s)"
    )
    print(
        f"PutLogEvents call              p50 {_percentile(calls, 50) * 1000:6.0f} ms   "
        f"max {max(calls) * 1000:6.0f} ms"
    )
    print(
        f"retries                        {stats.retries} by the shipper, "
        f"{botocore_retries} inside botocore; "
        f"{stats.possible_duplicates} possible duplicates"
    )
    print(f"first line -> its batch acked  {batch_first[0] * 1000:6.0f} ms")
    print(
        f"batch's first line -> acked    p50 {_percentile(batch_first, 50) * 1000:6.0f} ms   "
        f"p99 {_percentile(batch_first, 99) * 1000:6.0f} ms   "
        f"max {max(batch_first) * 1000:6.0f} ms"
    )
    print(
        f"batch's last line -> acked     p50 {_percentile(batch_last, 50) * 1000:6.0f} ms   "
        f"p99 {_percentile(batch_last, 99) * 1000:6.0f} ms   "
        f"max {max(batch_last) * 1000:6.0f} ms"
    )
    print(
        f"peak RSS                       {own_kib / 1024:6.1f} MiB this process, "
        f"{moto_kib / 1024:.1f} MiB moto's server (VmHWM)"
    )

    stream = output.stream_name(namespace=NAMESPACE, pod=VM_ID, container=CONTAINER)
    reading_back = time.monotonic()
    messages = await asyncio.to_thread(_read_back, raw, stream)
    read_back = time.monotonic() - reading_back
    problem = _check(messages, lines)
    if problem is not None:
        print(f"FAIL: {GROUP}/{stream}: {problem}")
        return False
    print(
        f"read back                      OK: all {lines} lines exactly once, in order "
        f"({read_back:.2f}s to read)"
    )
    return not timed_out


async def _remove(api: client.FleetClient) -> None:
    """Delete the microVM and wait until it is gone (fleetd's --stop-on-exit is the
    backstop: a failure here is reported, not raised over the benchmark's own)."""
    try:
        with contextlib.suppress(errors.NotFound):
            await api.delete_microvm(VM_ID, grace_seconds=0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                await api.get_microvm(VM_ID)
            except errors.NotFound:
                return
            await asyncio.sleep(0.2)
        print(f"warning: microVM {VM_ID} still there after 30s", file=sys.stderr)
    except errors.FleetError as exc:
        print(f"warning: deleting microVM {VM_ID}: {exc}", file=sys.stderr)


async def run(lines: int, timeout: float, root: Path) -> bool:
    aws = await devaws.start(root / "aws")
    try:
        async with (
            devfleet.with_images(root, settings.load().cache) as fleet,
            client.FleetClient(fleet.url, fleet.token) as api,
        ):
            try:
                return await _bench(api, aws, lines, timeout)
            finally:
                await _remove(api)
    finally:
        aws.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    options = parser.parse_args()
    if options.lines < 1:
        parser.error("--lines must be at least 1")
    with tempfile.TemporaryDirectory(prefix="log-bench-") as root:
        ok = asyncio.run(run(options.lines, options.timeout, Path(root)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
