"""Fargate's built-in log router: the ``aws-logging`` ConfigMap and CloudWatch Logs shipping.

EKS Fargate runs Fluent Bit for every pod, configured by the ConfigMap ``aws-logging`` in
namespace ``aws-observability`` (``fargate-facts.md`` §6): at most 5300 characters, keys
``filters.conf``, ``output.conf``, ``parsers.conf`` and ``flb_log_cw`` only. We validate
that ConfigMap the way Fargate does (``validate``/``parse``, pure) and, for the
``cloudwatch``/``cloudwatch_logs`` outputs, ship each container's lines ourselves
(``Shipper``) instead of running Fluent Bit next to every microVM. Other outputs
(Firehose, OpenSearch, Kinesis) are valid but not shipped; ``unshipped_outputs`` names
them. Fluent Bit templates (``$(...)``, ``${...}``) are not expanded and are reported.

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
import contextlib
import dataclasses
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NamedTuple

import botocore.exceptions

from vk_fargate import errors
from vk_fargate.aws.session import Client, error_code

log = logging.getLogger(__name__)

NAMESPACE = "aws-observability"
CONFIG_MAP = "aws-logging"
MAX_CONFIG_CHARS = 5300
CONFIG_KEYS = ("filters.conf", "output.conf", "parsers.conf", "flb_log_cw")
SECTIONS = {"filters.conf": "FILTER", "output.conf": "OUTPUT", "parsers.conf": "PARSER"}
CLOUDWATCH_PLUGINS = ("cloudwatch", "cloudwatch_logs")
SUPPORTED_FILTERS = (
    "grep",
    "kubernetes",
    "modify",
    "nest",
    "parser",
    "record_modifier",
    "rewrite_tag",
    "throttle",
)

# PutLogEvents limits (CloudWatch Logs API reference).
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
"""Bytes CloudWatch adds to each event's UTF-8 message when sizing a batch."""
MAX_EVENT_BYTES = 262_144 - EVENT_OVERHEAD
"""Largest message of one event (256 KiB with its overhead); longer lines are split."""
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000
MAX_STREAM_NAME = 512
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

_TRUE = ("true", "on", "yes", "1")
_FALSE = ("false", "off", "no", "0")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_GROUP_NAME = re.compile(r"^[\w./#-]{1,512}$")


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Section:
    """One ``[NAME]`` section of a Fluent Bit classic config; keys lower-cased, in order."""

    name: str
    entries: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        for k, v in self.entries:
            if k == key:
                return v
        return None


@dataclasses.dataclass(frozen=True)
class CloudWatchOutput:
    """A ``cloudwatch`` or ``cloudwatch_logs`` ``[OUTPUT]``: where a pod's logs go."""

    plugin: str
    match: str
    region: str
    log_group_name: str
    log_stream_prefix: str | None
    log_stream_name: str | None
    auto_create_group: bool

    def stream_name(self, *, namespace: str, pod: str, container: str) -> str:
        """The container's stream (see the module docstring)."""
        if self.log_stream_name is not None:
            return self.log_stream_name
        name = f"{self.log_stream_prefix or ''}{pod}_{namespace}_{container}"
        return re.sub(r"[:*]", "_", name)[:MAX_STREAM_NAME]


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """A valid ``aws-logging`` ConfigMap."""

    outputs: tuple[CloudWatchOutput, ...]
    unshipped_outputs: tuple[str, ...]
    filters: tuple[Section, ...]
    parsers: tuple[Section, ...]
    flb_log_cw: bool


def parse_sections(text: str, where: str) -> tuple[list[Section], list[str]]:
    """The sections of a Fluent Bit classic-format config, and its problems. Pure."""
    sections: list[Section] = []
    found: list[str] = []
    name: str | None = None
    entries: list[tuple[str, str]] = []

    def close() -> None:
        if name is not None:
            sections.append(Section(name, tuple(entries)))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            found.append(
                f"{where} line {number}: directives such as {line.split()[0]} are not allowed"
            )
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                found.append(f"{where} line {number}: malformed section header {line!r}")
                continue
            close()
            name, entries = line[1:-1].strip().upper(), []
            continue
        if name is None:
            found.append(f"{where} line {number}: {line!r} is outside any section")
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if not value:
            found.append(f"{where} line {number}: key {key!r} has no value")
            continue
        entries.append((key.lower(), value))
    close()
    return sections, found


def _bool(value: str | None, default: bool) -> bool | None:
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    return None


def _cloudwatch_output(section: Section, index: int) -> tuple[CloudWatchOutput | None, list[str]]:
    where = f"output.conf [OUTPUT] #{index} ({section.get('name')})"
    found = []
    for key, value in section.entries:
        if "$" in value:
            found.append(f"{where}: {key} uses a template ({value}); vk-fargate needs a literal")
    region = section.get("region")
    group = section.get("log_group_name")
    prefix = section.get("log_stream_prefix")
    stream = section.get("log_stream_name")
    if region is None:
        found.append(f"{where}: region is required")
    elif "$" not in region and not _REGION.match(region):
        found.append(f"{where}: region {region!r} is not an AWS region")
    if group is None:
        found.append(f"{where}: log_group_name is required")
    elif "$" not in group and not _GROUP_NAME.match(group):
        found.append(f"{where}: log_group_name {group!r} has characters CloudWatch refuses")
    if (prefix is None) == (stream is None):
        found.append(f"{where}: exactly one of log_stream_prefix and log_stream_name is required")
    for name in (prefix, stream):
        if name is not None and (":" in name or "*" in name or len(name) > MAX_STREAM_NAME):
            found.append(f"{where}: stream name {name!r} may not contain ':' or '*'")
    auto_create = _bool(section.get("auto_create_group"), default=False)
    if auto_create is None:
        found.append(f"{where}: auto_create_group must be true or false")
    if found or region is None or group is None or auto_create is None:
        return None, found
    output = CloudWatchOutput(
        plugin=str(section.get("name")).lower(),
        match=section.get("match") or "*",
        region=region,
        log_group_name=group,
        log_stream_prefix=prefix,
        log_stream_name=stream,
        auto_create_group=auto_create,
    )
    return output, []


def _check(data: Mapping[str, str]) -> tuple[LoggingConfig | None, list[str]]:
    found: list[str] = []
    total = sum(len(str(v)) for v in data.values())
    if total > MAX_CONFIG_CHARS:
        found.append(f"the ConfigMap has {total} characters; Fargate allows {MAX_CONFIG_CHARS}")
    for key in sorted(set(data) - set(CONFIG_KEYS)):
        found.append(f"key {key!r} is not allowed; only {', '.join(CONFIG_KEYS)}")
    parsed: dict[str, list[Section]] = {}
    for key, section_name in SECTIONS.items():
        sections, section_problems = parse_sections(str(data.get(key) or ""), key)
        found += section_problems
        for section in sections:
            if section.name != section_name:
                found.append(f"{key}: [{section.name}] is not allowed, only [{section_name}]")
            elif section.get("name") is None and section_name != "PARSER":
                found.append(f"{key}: a [{section_name}] section has no Name")
        parsed[key] = [s for s in sections if s.name == section_name]
    for section in parsed["filters.conf"]:
        plugin = (section.get("name") or "").lower()
        if plugin and plugin not in SUPPORTED_FILTERS:
            found.append(
                f"filters.conf: filter {plugin!r} is not supported on Fargate "
                f"({', '.join(SUPPORTED_FILTERS)})"
            )
    flb_log_cw = _bool(data.get("flb_log_cw"), default=False)
    if flb_log_cw is None:
        found.append("flb_log_cw must be true or false")
    outputs: list[CloudWatchOutput] = []
    unshipped: list[str] = []
    named = [s for s in parsed["output.conf"] if s.get("name")]
    if not named:
        found.append("output.conf has no [OUTPUT] section: logs would go nowhere")
    for index, section in enumerate(named, start=1):
        plugin = str(section.get("name")).lower()
        if plugin in CLOUDWATCH_PLUGINS:
            output, output_problems = _cloudwatch_output(section, index)
            found += output_problems
            if output is not None:
                outputs.append(output)
        else:
            unshipped.append(plugin)
    if found or flb_log_cw is None:
        return None, found
    config = LoggingConfig(
        outputs=tuple(outputs),
        unshipped_outputs=tuple(unshipped),
        filters=tuple(parsed["filters.conf"]),
        parsers=tuple(parsed["parsers.conf"]),
        flb_log_cw=flb_log_cw,
    )
    return config, []


def validate(data: Mapping[str, str]) -> list[str]:
    """Every problem of the ConfigMap's ``data`` (empty when Fargate would take it). Pure."""
    return _check(data)[1]


def parse(data: Mapping[str, str]) -> LoggingConfig:
    """The config in the ConfigMap's ``data``; ``LoggingConfigInvalid`` lists all problems."""
    config, found = _check(data)
    if config is None:
        raise errors.LoggingConfigInvalid(found)
    return config


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
        output: CloudWatchOutput,
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
        pump = asyncio.create_task(self._pump(lines, queue))
        loop = asyncio.get_running_loop()
        batcher = Batcher()
        deadline: float | None = None
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    await self._ship(batcher.take())
                    deadline = None
                    continue
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
            base, cap = self.backoff
            delay = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
            log.info(
                "%s to %s/%s: %s; retrying in %.2fs", what, self.group, self.stream, reason, delay
            )
            await self._sleep(delay)
