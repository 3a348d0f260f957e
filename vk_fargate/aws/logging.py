"""Fargate's built-in log router, for CloudWatch Logs: each container's lines shipped.

For the ``cloudwatch``/``cloudwatch_logs`` outputs of the ``aws-logging`` ConfigMap
(``aws.logconfig``), we ship each container's lines ourselves (``Shipper``) instead of
running Fluent Bit next to every microVM.

Stream name: ``<log_stream_prefix><pod>_<namespace>_<container>`` - Fluent Bit's is the
prefix plus the record's tag, ``kube.var.log.containers.<pod>_<namespace>_<container>-
<container id>.log`` on Fargate; we keep its identifying middle and drop the container id
so a restarted container keeps writing to one stream. ``log_stream_name`` is used as is.

Delivery is at-least-once without needless duplicates. CloudWatch has dropped sequence
tokens, so nothing on the server spots a batch sent twice; the shipper therefore never
sends an acknowledged event again: a batch is frozen when cut, re-sent unchanged until
PutLogEvents answers 200, and only then dropped (the cursor moves on success only). A
*refusal* (throttling, a 5xx, a missing stream: an error response) means nothing was
stored, so re-sending cannot duplicate. Only an *ambiguous* failure - the connection
dropped or timed out after the request left - may have stored the batch; re-sending it
is the at-least-once price, and ``ShipStats.possible_duplicates`` counts such events.
Events CloudWatch rejects for their age (older than 14 days or the group's retention,
more than 2 hours ahead) are counted, not retried: they would be rejected again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import botocore.exceptions

from vk_fargate import errors, supervision
from vk_fargate.aws import logconfig
from vk_fargate.aws.session import Client, error_code

log = logging.getLogger(__name__)

# PutLogEvents limits (CloudWatch Logs API reference).
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
"""Bytes CloudWatch adds to each event's UTF-8 message when sizing a batch."""
MAX_EVENT_BYTES = 262_144 - EVENT_OVERHEAD
"""Largest message of one event (256 KiB with its overhead); longer lines are split."""
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

# ----------------------------------------------------------------------------- batching


class LogEvent(NamedTuple):
    timestamp: int
    message: str


def split_message(message: str, limit: int = MAX_EVENT_BYTES) -> list[str]:
    """``message`` in pieces of at most ``limit`` UTF-8 bytes, cut between characters. Pure."""
    encoded = message.encode()
    if len(encoded) <= limit:
        return [message]
    pieces = []
    start = 0
    while start < len(encoded):
        end = min(start + limit, len(encoded))
        while end < len(encoded) and (encoded[end] & 0xC0) == 0x80:
            end -= 1  # do not cut inside a multi-byte character
        pieces.append(encoded[start:end].decode())
        start = end
    return pieces


class Batcher:
    """Cuts a stream of lines into PutLogEvents batches. Pure (no I/O, no clock).

    A batch holds at most ``MAX_BATCH_EVENTS`` events and ``MAX_BATCH_BYTES`` (messages
    plus ``EVENT_OVERHEAD`` each) and spans less than 24 hours. Timestamps never go
    backwards: a line stamped earlier than the one before it takes that one's timestamp,
    so lines keep their order and every batch is chronological. A line longer than
    ``MAX_EVENT_BYTES`` becomes several consecutive events; an empty line is skipped
    (CloudWatch refuses empty messages).
    """

    def __init__(self, *, max_events: int = MAX_BATCH_EVENTS, max_bytes: int = MAX_BATCH_BYTES):
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: list[LogEvent] = []
        self._bytes = 0
        self._last_timestamp: int | None = None

    @property
    def pending(self) -> int:
        return len(self._events)

    def add(self, timestamp: int, line: str) -> list[list[LogEvent]]:
        """Add one line; the batches it completed (usually none)."""
        done: list[list[LogEvent]] = []
        if self._last_timestamp is not None and timestamp < self._last_timestamp:
            timestamp = self._last_timestamp
        self._last_timestamp = timestamp
        for piece in split_message(line) if line else []:
            size = len(piece.encode()) + EVENT_OVERHEAD
            if self._events and (
                self._bytes + size > self.max_bytes
                or timestamp - self._events[0].timestamp >= MAX_BATCH_SPAN_MS
            ):
                done.append(self.take())
            self._events.append(LogEvent(timestamp, piece))
            self._bytes += size
            if len(self._events) >= self.max_events:
                done.append(self.take())
        return done

    def take(self) -> list[LogEvent]:
        """The pending batch (possibly empty), which is then forgotten."""
        batch, self._events, self._bytes = self._events, [], 0
        return batch


# ----------------------------------------------------------------------------- shipping


@dataclasses.dataclass
class ShipStats:
    """What a ``Shipper`` did."""

    lines: int = 0
    events_sent: int = 0
    batches: int = 0
    retries: int = 0
    possible_duplicates: int = 0
    rejected_too_old: int = 0
    rejected_too_new: int = 0
    rejected_expired: int = 0


@dataclasses.dataclass(frozen=True)
class _End:
    error: BaseException | None


Sleep = Callable[[float], Awaitable[None]]


class Shipper:
    """Ships one container's lines to one CloudWatch output (see the module docstring).

    ``logs`` must be a client of ``output.region``. ``run`` reads ``(timestamp_ms, line)``
    pairs and sends a batch when it is full, when its first line has waited
    ``flush_interval`` seconds, and when the input ends. Failed calls are retried with
    exponential back-off and full jitter, forever unless ``max_attempts`` is given.
    """

    def __init__(
        self,
        logs: Client,
        output: logconfig.CloudWatchOutput,
        *,
        namespace: str,
        pod: str,
        container: str,
        flush_interval: float = 5.0,
        max_attempts: int | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
        queue_size: int = MAX_BATCH_EVENTS,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.logs = logs
        self.output = output
        self.group = output.log_group_name
        self.stream = output.stream_name(namespace=namespace, pod=pod, container=container)
        self.flush_interval = flush_interval
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.queue_size = queue_size
        self.stats = ShipStats()
        self._sleep = sleep
        self._stream_ready = False

    async def run(self, lines: AsyncIterator[tuple[int, str]]) -> ShipStats:
        """Ship ``lines`` until they end; raises what the input raised, after a last flush.

        Cancelling abandons the lines not yet acknowledged. ``stats`` add up over runs.
        """
        queue: asyncio.Queue[tuple[int, str] | _End] = asyncio.Queue(self.queue_size)
        pump = asyncio.create_task(self._pump(lines, queue), name=f"ship-pump {self.stream}")
        loop = asyncio.get_running_loop()
        batcher = Batcher()
        deadline: float | None = None
        try:
            while True:
                if queue.empty():  # only then wait, with the flush deadline as the limit
                    timeout = None if deadline is None else max(0.0, deadline - loop.time())
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout)
                    except TimeoutError:
                        await self._ship(batcher.take())
                        deadline = None
                        continue
                else:  # lines are waiting: no timer (wait_for costs a task per line)
                    item = queue.get_nowait()
                    if deadline is not None and loop.time() >= deadline:
                        await self._ship(batcher.take())
                        deadline = None
                if isinstance(item, _End):
                    await self._ship(batcher.take())
                    if item.error is not None:
                        raise item.error
                    return self.stats
                self.stats.lines += 1
                was_empty = batcher.pending == 0
                completed = batcher.add(*item)
                for batch in completed:
                    await self._ship(batch)
                if not batcher.pending:
                    deadline = None
                elif was_empty or completed:
                    deadline = loop.time() + self.flush_interval
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    @staticmethod
    async def _pump(
        lines: AsyncIterator[tuple[int, str]], queue: asyncio.Queue[tuple[int, str] | _End]
    ) -> None:
        try:
            async for timestamp, line in lines:
                await queue.put((int(timestamp), line))
        except Exception as exc:  # handed to run(), which raises it after a last flush
            await queue.put(_End(exc))
            return
        await queue.put(_End(None))

    async def _ship(self, batch: list[LogEvent]) -> None:
        if not batch:
            return
        events = [{"timestamp": e.timestamp, "message": e.message} for e in batch]
        answer = await self._with_retries("PutLogEvents", len(events), self._put_log_events, events)
        self.stats.batches += 1
        self.stats.events_sent += len(events)
        rejected = answer.get("rejectedLogEventsInfo") or {}
        if rejected:
            too_old = int(rejected.get("tooOldLogEventEndIndex", -1)) + 1
            expired = int(rejected.get("expiredLogEventEndIndex", -1)) + 1
            too_new_from = rejected.get("tooNewLogEventStartIndex")
            too_new = len(events) - int(too_new_from) if too_new_from is not None else 0
            self.stats.rejected_too_old += too_old
            self.stats.rejected_expired += expired
            self.stats.rejected_too_new += too_new
            log.warning(
                "CloudWatch rejected events of %s/%s: %d too old, %d expired, %d too new",
                self.group,
                self.stream,
                too_old,
                expired,
                too_new,
            )

    async def shipped_tail(self) -> tuple[int, collections.Counter[str]]:
        """Where an earlier run left the stream: its newest event's timestamp (0 when
        empty or absent) and the messages stored at that millisecond, so a restarted
        router skips what is already there instead of sending it again."""
        return await asyncio.to_thread(self._shipped_tail)

    def _shipped_tail(self) -> tuple[int, collections.Counter[str]]:
        try:
            answer = self.logs.get_log_events(
                logGroupName=self.group, logStreamName=self.stream, startFromHead=False, limit=100
            )
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return 0, collections.Counter()
            raise errors.AwsError(
                f"cannot read {self.group}/{self.stream}: {exc}", code=error_code(exc)
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:  # unreachable, timed out
            raise errors.AwsError(f"cannot read {self.group}/{self.stream}: {exc}") from exc
        events = answer.get("events") or []
        if not events:
            return 0, collections.Counter()
        last = max(int(e["timestamp"]) for e in events)
        return last, collections.Counter(
            str(e["message"]) for e in events if int(e["timestamp"]) == last
        )

    def _put_log_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        if not self._stream_ready:
            self._ensure_stream()
        try:
            answer: dict[str, Any] = self.logs.put_log_events(
                logGroupName=self.group, logStreamName=self.stream, logEvents=events
            )
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                self._stream_ready = False  # deleted under us: create it on the retry
            raise
        return answer

    def _ensure_stream(self) -> None:
        if self.output.auto_create_group:
            self._create("create_log_group", logGroupName=self.group)
        try:
            self._create("create_log_stream", logGroupName=self.group, logStreamName=self.stream)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            raise errors.AwsError(
                f"log group {self.group} does not exist and auto_create_group is off",
                code="ResourceNotFoundException",
            ) from exc
        self._stream_ready = True

    def _create(self, operation: str, **kwargs: str) -> None:
        try:
            getattr(self.logs, operation)(**kwargs)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "ResourceAlreadyExistsException":
                raise

    async def _with_retries(
        self,
        what: str,
        events: int,
        call: Callable[[list[dict[str, Any]]], dict[str, Any]],
        payload: list[dict[str, Any]],
    ) -> dict[str, Any]:
        attempt = 0
        backoff = supervision.Backoff(*self.backoff, jitter=1.0)
        while True:
            attempt += 1
            try:
                return await asyncio.to_thread(call, payload)
            except botocore.exceptions.ClientError as exc:
                code = error_code(exc)
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                if not (
                    code in RETRYABLE_CODES or status >= 500 or code == "ResourceNotFoundException"
                ):
                    raise errors.AwsError(
                        f"{what} to {self.group}/{self.stream} failed: {exc}", code=code
                    ) from exc
                reason: BaseException = exc
            except botocore.exceptions.HTTPClientError as exc:
                # The request may have been stored before the connection failed.
                self.stats.possible_duplicates += events
                reason = exc
            except botocore.exceptions.ConnectionError as exc:
                reason = exc  # never connected: nothing was sent
            if self.max_attempts is not None and attempt >= self.max_attempts:
                raise errors.AwsError(
                    f"{what} to {self.group}/{self.stream} failed {attempt} times; last: {reason}",
                    code=error_code(reason),
                ) from reason
            self.stats.retries += 1
            delay = backoff.next()
            log.info(
                "%s to %s/%s: %s; retrying in %.2fs", what, self.group, self.stream, reason, delay
            )
            await self._sleep(delay)
