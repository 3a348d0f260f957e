"""Tests of aws.logging: the aws-logging ConfigMap (plain values), batching (pure), and the
Shipper against moto's CloudWatch Logs in-process.

moto checks none of PutLogEvents' limits, so every shipping test records the batches the
shipper sent and asserts the limits on them itself, then reads the stream back with
GetLogEvents to check that exactly the input arrived, in order, once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import botocore.exceptions
import pytest
from moto import mock_aws

from vk_fargate import errors
from vk_fargate.aws import logconfig, session
from vk_fargate.aws import logging as awslogs

OUTPUT_CONF = """\
[OUTPUT]
    Name cloudwatch_logs
    Match   *
    region eu-central-1
    log_group_name my-logs
    log_stream_prefix from-fluent-bit-
    auto_create_group true
"""
FILTERS_CONF = """\
[FILTER]
    Name parser
    Match *
    Key_name log
    Parser crio
"""
PARSERS_CONF = """\
[PARSER]
    Name crio
    Format Regex
    Regex ^(?<time>[^ ]+) (?<stream>stdout|stderr) (?<logtag>P|F) (?<log>.*)$
"""


def data(**overrides: str) -> dict[str, str]:
    base = {"output.conf": OUTPUT_CONF, "filters.conf": FILTERS_CONF, "parsers.conf": PARSERS_CONF}
    return {k: v for k, v in {**base, **overrides}.items() if v != "-"}


# ----------------------------------------------------------------------------- config


def test_the_eks_example_is_valid_and_parsed() -> None:
    assert logconfig.validate(data(flb_log_cw="true")) == []
    config = logconfig.parse(data(flb_log_cw="true"))
    assert config.outputs == (
        logconfig.CloudWatchOutput(
            plugin="cloudwatch_logs",
            match="*",
            region="eu-central-1",
            log_group_name="my-logs",
            log_stream_prefix="from-fluent-bit-",
            log_stream_name=None,
            auto_create_group=True,
        ),
    )
    assert config.flb_log_cw is True
    assert [f.get("name") for f in config.filters] == ["parser"]
    assert [p.get("name") for p in config.parsers] == ["crio"]
    assert config.outputs[0].stream_name(namespace="shop", pod="web-1", container="nginx") == (
        "from-fluent-bit-web-1_shop_nginx"
    )


def test_a_configmap_over_5300_characters_is_refused() -> None:
    comment = "#" + "x" * (logconfig.MAX_CONFIG_CHARS - len(OUTPUT_CONF) - 2) + "\n"
    exactly = {"output.conf": OUTPUT_CONF, "filters.conf": comment}
    assert sum(map(len, exactly.values())) == logconfig.MAX_CONFIG_CHARS
    assert logconfig.validate(exactly) == []
    [problem] = logconfig.validate({**exactly, "filters.conf": comment + "#"})
    assert "5301 characters" in problem and "5300" in problem


def test_keys_other_than_the_four_are_refused() -> None:
    problems_found = logconfig.validate(data(**{"fluent-bit.conf": "[SERVICE]\n Flush 1\n"}))
    assert len(problems_found) == 1
    assert "'fluent-bit.conf' is not allowed" in problems_found[0]


@pytest.mark.parametrize(
    "output_conf",
    ["-", "", "# nothing but a comment\n", "[FILTER]\n    Name grep\n"],
    ids=["absent", "empty", "comment", "wrong-section"],
)
def test_a_config_without_an_output_is_refused(output_conf: str) -> None:
    found = logconfig.validate(data(**{"output.conf": output_conf}))
    assert any("no [OUTPUT] section" in p for p in found)


@pytest.mark.parametrize("plugin", ["cloudwatch", "cloudwatch_logs", "CloudWatch_Logs"])
def test_both_cloudwatch_plugins_are_accepted(plugin: str) -> None:
    conf = OUTPUT_CONF.replace("cloudwatch_logs", plugin)
    [output] = logconfig.parse(data(**{"output.conf": conf})).outputs
    assert output.plugin == plugin.lower()


def test_a_cloudwatch_and_a_cloudwatch_logs_output_together_are_two_outputs() -> None:
    second = OUTPUT_CONF.replace("cloudwatch_logs", "cloudwatch").replace("my-logs", "other")
    config = logconfig.parse(data(**{"output.conf": OUTPUT_CONF + second}))
    assert [(o.plugin, o.log_group_name) for o in config.outputs] == [
        ("cloudwatch_logs", "my-logs"),
        ("cloudwatch", "other"),
    ]


def test_other_outputs_are_valid_but_not_shipped() -> None:
    firehose = "[OUTPUT]\n    Name kinesis_firehose\n    Match *\n    delivery_stream s\n"
    config = logconfig.parse(data(**{"output.conf": OUTPUT_CONF + firehose}))
    assert len(config.outputs) == 1
    assert config.unshipped_outputs == ("kinesis_firehose",)


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("    region eu-central-1\n", "", "region is required"),
        ("    log_group_name my-logs\n", "", "log_group_name is required"),
        ("    log_stream_prefix from-fluent-bit-\n", "", "exactly one of log_stream_prefix"),
        ("auto_create_group true", "auto_create_group maybe", "auto_create_group must"),
        ("region eu-central-1", "region Frankfurt", "not an AWS region"),
        ("my-logs", "/eks/$(kubernetes['namespace_name'])", "template"),
        ("from-fluent-bit-", "bad:prefix", "may not contain"),
        ("log_group_name my-logs", "log_group_name a b!", "characters CloudWatch refuses"),
        (
            "auto_create_group true",
            "auto_create_group true\n    log_stream_name both",
            "exactly one of log_stream_prefix",
        ),
    ],
)
def test_a_broken_cloudwatch_output_is_refused_with_the_reason(
    old: str, new: str, says: str
) -> None:
    conf = OUTPUT_CONF.replace(old, new)
    assert conf != OUTPUT_CONF
    found = logconfig.validate(data(**{"output.conf": conf}))
    assert any(says in p for p in found), found
    with pytest.raises(errors.LoggingConfigInvalid) as caught:
        logconfig.parse(data(**{"output.conf": conf}))
    assert caught.value.problems == found


def test_a_missing_auto_create_group_means_off_as_in_fluent_bit() -> None:
    conf = OUTPUT_CONF.replace("    auto_create_group true\n", "")
    [output] = logconfig.parse(data(**{"output.conf": conf})).outputs
    assert output.auto_create_group is False


def test_log_stream_name_is_used_as_is() -> None:
    conf = OUTPUT_CONF.replace("log_stream_prefix from-fluent-bit-", "log_stream_name all-pods")
    [output] = logconfig.parse(data(**{"output.conf": conf})).outputs
    assert output.stream_name(namespace="a", pod="b", container="c") == "all-pods"


@pytest.mark.parametrize(
    ("key", "text", "says"),
    [
        ("filters.conf", "[FILTER]\n    Name lua\n    Match *\n", "'lua' is not supported"),
        ("filters.conf", "[INPUT]\n    Name tail\n", "[INPUT] is not allowed"),
        ("output.conf", OUTPUT_CONF + "[SERVICE]\n    Flush 1\n", "[SERVICE] is not allowed"),
        ("output.conf", "@INCLUDE other.conf\n" + OUTPUT_CONF, "directives"),
        ("output.conf", "    Name es\n" + OUTPUT_CONF, "outside any section"),
        ("output.conf", OUTPUT_CONF + "[OUTPUT\n", "malformed section header"),
        ("output.conf", OUTPUT_CONF.replace("Match   *", "Match"), "has no value"),
        ("output.conf", OUTPUT_CONF + "[OUTPUT]\n    Match *\n", "has no Name"),
        ("flb_log_cw", "sometimes", "flb_log_cw must be true or false"),
    ],
)
def test_what_fargate_refuses_in_each_key(key: str, text: str, says: str) -> None:
    found = logconfig.validate(data(**{key: text}))
    assert any(says in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = logconfig.validate({"output.conf": "", "extra": "x", "flb_log_cw": "x" * 5301})
    assert len(found) == 4  # too long, bad key, no output, bad flb_log_cw


# ----------------------------------------------------------------------------- batching


def test_ten_thousand_events_make_a_batch() -> None:
    batcher = awslogs.Batcher()
    done = [b for n in range(25_000) for b in batcher.add(1000 + n, f"line {n}")]
    rest = batcher.take()
    assert [len(b) for b in done] == [10_000, 10_000]
    assert len(rest) == 5_000
    assert [e.message for b in [*done, rest] for e in b] == [f"line {n}" for n in range(25_000)]
    assert batcher.take() == []


def test_a_batch_stays_under_the_byte_limit_counting_26_bytes_per_event() -> None:
    batcher = awslogs.Batcher()
    line = "x" * (100_000 - awslogs.EVENT_OVERHEAD)  # exactly 100,000 bytes with overhead
    done = [b for n in range(25) for b in batcher.add(n, line)]
    assert [len(b) for b in done] == [10, 10]  # 11 would be 1,100,000 > 1,048,576
    assert all(size(b) <= awslogs.MAX_BATCH_BYTES for b in done)


def test_the_per_event_overhead_binds_before_the_event_count() -> None:
    batcher = awslogs.Batcher()
    done = [b for n in range(10_000) for b in batcher.add(n, "z" * 80)]
    # 80 + 26 = 106 bytes an event: 9,892 fit in 1,048,576 bytes (without the
    # overhead all 10,000 would, at 800,000 bytes).
    assert [len(b) for b in done] == [9_892]
    assert len(batcher.take()) == 108


def test_a_batch_that_exactly_fills_the_byte_limit_is_allowed() -> None:
    batcher = awslogs.Batcher()
    per_event = awslogs.MAX_BATCH_BYTES // 4
    line = "y" * (per_event - awslogs.EVENT_OVERHEAD)
    done = [b for n in range(5) for b in batcher.add(n, line)]
    assert [size(b) for b in done] == [awslogs.MAX_BATCH_BYTES]


def test_a_batch_never_spans_24_hours() -> None:
    day = awslogs.MAX_BATCH_SPAN_MS
    batcher = awslogs.Batcher()
    done = [b for t in (0, 1, day - 1, day, day + 5) for b in batcher.add(t, "m")]
    assert [[e.timestamp for e in b] for b in done] == [[0, 1, day - 1]]
    assert [e.timestamp for e in batcher.take()] == [day, day + 5]


def test_timestamps_never_go_backwards_and_lines_keep_their_order() -> None:
    batcher = awslogs.Batcher()
    for timestamp, line in [(100, "a"), (90, "b"), (150, "c"), (120, "d"), (151, "e")]:
        assert batcher.add(timestamp, line) == []
    assert batcher.take() == [
        awslogs.LogEvent(100, "a"),
        awslogs.LogEvent(100, "b"),
        awslogs.LogEvent(150, "c"),
        awslogs.LogEvent(150, "d"),
        awslogs.LogEvent(151, "e"),
    ]
    # ...also across batches.
    assert batcher.add(10, "f") == []
    assert batcher.take() == [awslogs.LogEvent(151, "f")]


def test_an_empty_line_is_skipped() -> None:
    batcher = awslogs.Batcher()
    for line in ("a", "", "b"):
        batcher.add(1, line)
    assert [e.message for e in batcher.take()] == ["a", "b"]


@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])
def test_an_oversized_line_is_split_between_characters(char: str) -> None:
    line = char * (awslogs.MAX_EVENT_BYTES // len(char.encode()) + 1000)
    pieces = awslogs.split_message(line)
    assert len(pieces) == 2
    assert "".join(pieces) == line
    assert all(0 < len(p.encode()) <= awslogs.MAX_EVENT_BYTES for p in pieces)
    assert awslogs.split_message("short") == ["short"]


def size(batch: Iterable[Any]) -> int:
    return sum(len(e.message.encode()) + awslogs.EVENT_OVERHEAD for e in batch)


# ----------------------------------------------------------------------------- shipping

NOW = int(time.time() * 1000)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield session.make_client(session.AwsSettings(region="eu-central-1"), "logs")


def output(*, auto_create: bool = True) -> logconfig.CloudWatchOutput:
    return logconfig.CloudWatchOutput(
        plugin="cloudwatch_logs",
        match="*",
        region="eu-central-1",
        log_group_name="my-logs",
        log_stream_prefix="fb-",
        log_stream_name=None,
        auto_create_group=auto_create,
    )


def fail(code: str, status: int = 400) -> botocore.exceptions.ClientError:
    error = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return botocore.exceptions.ClientError(error, "PutLogEvents")


class Recording:
    """A moto logs client that records every PutLogEvents and fails the ones told to.

    ``failures`` maps a call number (1-based) to ``("before", exc)``: raise instead of
    sending, or ``("after", exc)``: send, then raise (the answer was lost on the way).
    """

    def __init__(
        self, inner: Any, failures: dict[int, tuple[str, Exception | None]] | None = None
    ) -> None:
        self.inner = inner
        self.failures = failures or {}
        self.calls: list[list[dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_log_events(self, **kw: Any) -> Any:
        self.calls.append(list(kw["logEvents"]))
        when, exc = self.failures.get(len(self.calls), ("never", None))
        if when == "before" and exc is not None:
            raise exc
        answer = self.inner.put_log_events(**kw)
        if when == "after" and exc is not None:
            raise exc
        return answer


def shipper(client: Any, **kw: Any) -> awslogs.Shipper:
    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    kw.setdefault("sleep", no_sleep)
    kw.setdefault("flush_interval", 60.0)
    return awslogs.Shipper(
        client, kw.pop("out", output()), namespace="shop", pod="web-1", container="nginx", **kw
    )


async def feed(pairs: Iterable[tuple[int, str]]) -> AsyncIterator[tuple[int, str]]:
    for pair in pairs:
        yield pair


def read_back_when_there(logs: Any) -> list[tuple[int, str]]:
    """What ``read_back`` finds, or nothing while the group or stream does not exist yet."""
    try:
        return read_back(logs)
    except logs.exceptions.ResourceNotFoundException:
        return []


def read_back(logs: Any, stream: str = "fb-web-1_shop_nginx") -> list[tuple[int, str]]:
    events: list[tuple[int, str]] = []
    kw: dict[str, Any] = {"logGroupName": "my-logs", "logStreamName": stream, "startFromHead": True}
    while True:
        page = logs.get_log_events(**kw)
        if not page["events"]:
            return events
        events += [(e["timestamp"], e["message"]) for e in page["events"]]
        kw["nextToken"] = page["nextForwardToken"]


def assert_within_limits(calls: list[list[dict[str, Any]]]) -> None:
    for batch in calls:
        assert 0 < len(batch) <= awslogs.MAX_BATCH_EVENTS
        assert sum(len(e["message"].encode()) + 26 for e in batch) <= awslogs.MAX_BATCH_BYTES
        stamps = [e["timestamp"] for e in batch]
        assert stamps == sorted(stamps)
        assert stamps[-1] - stamps[0] < awslogs.MAX_BATCH_SPAN_MS
        assert all(0 < len(e["message"].encode()) <= awslogs.MAX_EVENT_BYTES for e in batch)


async def test_more_than_ten_thousand_lines_go_in_several_batches_in_order(logs: Any) -> None:
    # 100 lines share each millisecond: GetLogEvents sorts by time only (stably), so a
    # reordering inside one millisecond would show.
    lines = [(NOW + n // 100, f"line {n}") for n in range(23_456)]
    client = Recording(logs)

    stats = await shipper(client).run(feed(lines))

    assert [len(c) for c in client.calls] == [10_000, 10_000, 3_456]
    assert_within_limits(client.calls)
    assert read_back(logs) == lines
    assert (stats.lines, stats.events_sent, stats.batches, stats.retries) == (23_456, 23_456, 3, 0)


async def test_an_oversized_line_arrives_whole_in_consecutive_events(logs: Any) -> None:
    huge = "".join(chr(0x41 + n % 26) for n in range(600_000))
    lines = [(NOW, "before"), (NOW + 1, huge), (NOW + 2, "after")]
    client = Recording(logs)

    await shipper(client).run(feed(lines))

    assert_within_limits(client.calls)
    back = read_back(logs)
    assert len(back) == 5  # 600,000 bytes make three events
    assert back[0] == (NOW, "before") and back[-1] == (NOW + 2, "after")
    assert "".join(m for _, m in back[1:-1]) == huge
    assert {t for t, _ in back[1:-1]} == {NOW + 1}


async def test_a_throttled_put_is_retried_without_duplicating_anything(logs: Any) -> None:
    lines = [(NOW + n, f"line {n}") for n in range(15_000)]
    client = Recording(logs, {1: ("before", fail("ThrottlingException"))})

    stats = await shipper(client).run(feed(lines))

    assert [len(c) for c in client.calls] == [10_000, 10_000, 5_000]
    assert client.calls[0] == client.calls[1]  # the same batch, unchanged
    assert read_back(logs) == lines  # exact count and order: nothing twice
    assert (stats.retries, stats.possible_duplicates, stats.events_sent) == (1, 0, 15_000)


async def test_server_errors_are_retried_too(logs: Any) -> None:
    client = Recording(
        logs,
        {1: ("before", fail("ServiceUnavailableException", 503)), 2: ("before", fail("X", 500))},
    )
    stats = await shipper(client).run(feed([(NOW, "a"), (NOW, "b")]))
    assert read_back(logs) == [(NOW, "a"), (NOW, "b")]
    assert stats.retries == 2


async def test_a_lost_answer_is_counted_as_a_possible_duplicate(logs: Any) -> None:
    # The one case at-least-once cannot avoid: the batch was stored, the answer lost.
    lost = botocore.exceptions.ReadTimeoutError(endpoint_url="http://logs")
    client = Recording(logs, {1: ("after", lost)})

    stats = await shipper(client).run(feed([(NOW, "a"), (NOW, "b")]))

    assert stats.possible_duplicates == 2
    assert read_back(logs) == [(NOW, "a"), (NOW, "b")] * 2


async def test_a_refused_connection_is_retried_and_is_no_duplicate(logs: Any) -> None:
    refused = botocore.exceptions.EndpointConnectionError(endpoint_url="http://logs")
    client = Recording(logs, {1: ("before", refused)})
    stats = await shipper(client).run(feed([(NOW, "a")]))
    assert (stats.retries, stats.possible_duplicates) == (1, 0)
    assert read_back(logs) == [(NOW, "a")]


async def test_a_bad_request_is_not_retried(logs: Any) -> None:
    client = Recording(logs, {1: ("before", fail("InvalidParameterException"))})
    with pytest.raises(errors.AwsError, match="InvalidParameterException") as caught:
        await shipper(client).run(feed([(NOW, "a")]))
    assert caught.value.code == "InvalidParameterException"
    assert len(client.calls) == 1


async def test_retries_stop_at_max_attempts(logs: Any) -> None:
    client = Recording(logs, {n: ("before", fail("ThrottlingException")) for n in range(1, 10)})
    with pytest.raises(errors.AwsError, match="failed 3 times"):
        await shipper(client, max_attempts=3).run(feed([(NOW, "a")]))
    assert len(client.calls) == 3


async def test_back_off_grows_exponentially_up_to_the_cap(logs: Any) -> None:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    client = Recording(logs, {n: ("before", fail("ThrottlingException")) for n in range(1, 9)})
    await shipper(client, sleep=sleep, backoff=(1.0, 8.0)).run(feed([(NOW, "a")]))
    caps = [1, 2, 4, 8, 8, 8, 8, 8]
    assert len(delays) == len(caps)
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert read_back(logs) == [(NOW, "a")]


async def test_without_auto_create_group_an_existing_group_is_used(logs: Any) -> None:
    logs.create_log_group(logGroupName="my-logs")
    await shipper(logs, out=output(auto_create=False)).run(feed([(NOW, "a")]))
    assert read_back(logs) == [(NOW, "a")]


async def test_without_auto_create_group_a_missing_group_is_an_error(logs: Any) -> None:
    with pytest.raises(errors.AwsError, match="my-logs does not exist"):
        await shipper(logs, out=output(auto_create=False)).run(feed([(NOW, "a")]))
    assert logs.describe_log_groups()["logGroups"] == []


async def test_a_stream_deleted_under_the_shipper_is_created_again(logs: Any) -> None:
    first = shipper(logs)
    await first.run(feed([(NOW, "a")]))
    logs.delete_log_stream(logGroupName="my-logs", logStreamName=first.stream)

    stats = await first.run(feed([(NOW + 1, "b")]))

    assert read_back(logs) == [(NOW + 1, "b")]
    assert stats.retries == 1


async def test_a_partial_batch_is_flushed_after_the_interval(logs: Any) -> None:
    client = Recording(logs)
    release = asyncio.Event()

    async def lines() -> AsyncIterator[tuple[int, str]]:
        yield NOW, "a"
        yield NOW, "b"
        await release.wait()  # the container is quiet: no new line, no end
        yield NOW + 1, "c"

    task = asyncio.create_task(shipper(client, flush_interval=0.2).run(lines()))
    try:
        # Wait for the events themselves: a call is recorded before its send (in a
        # thread) has finished, so reading back on the first recorded call can race it.
        deadline = time.monotonic() + 10
        while not read_back_when_there(logs):
            assert time.monotonic() < deadline, "the partial batch was never flushed"
            await asyncio.sleep(0.05)
        assert read_back(logs) == [(NOW, "a"), (NOW, "b")]
    finally:
        release.set()
        stats = await task
    assert [len(c) for c in client.calls] == [2, 1]
    assert stats.batches == 2


async def test_a_failing_input_is_flushed_then_raised(logs: Any) -> None:
    async def lines() -> AsyncIterator[tuple[int, str]]:
        yield NOW, "a"
        raise OSError("log file vanished")

    with pytest.raises(OSError, match="vanished"):
        await shipper(logs).run(lines())
    assert read_back(logs) == [(NOW, "a")]


async def test_events_cloudwatch_rejects_for_age_are_counted_not_retried(logs: Any) -> None:
    old = NOW - 15 * 24 * 3600 * 1000
    client = Recording(logs)
    stats = await shipper(client).run(feed([(old, "ancient"), (old + 1, "old"), (NOW, "fresh")]))
    assert [len(c) for c in client.calls] == [2, 1]  # more than 24 h apart: two batches
    assert (stats.rejected_too_old, stats.retries, stats.events_sent) == (2, 0, 3)
    assert read_back(logs) == [(NOW, "fresh")]


async def test_the_shipped_tail_of_a_missing_or_empty_stream_is_nothing(logs: Any) -> None:
    assert await shipper(logs).shipped_tail() == (0, Counter())
    logs.create_log_group(logGroupName="my-logs")
    logs.create_log_stream(logGroupName="my-logs", logStreamName="fb-web-1_shop_nginx")
    assert await shipper(logs).shipped_tail() == (0, Counter())


async def test_the_shipped_tail_is_the_newest_millisecond_and_its_messages(logs: Any) -> None:
    lines = [(NOW, "a"), (NOW + 1, "b"), (NOW + 2, "c"), (NOW + 2, "c"), (NOW + 2, "d")]
    await shipper(logs).run(feed(lines))
    last, stored = await shipper(logs).shipped_tail()
    assert last == NOW + 2
    assert stored == Counter({"c": 2, "d": 1})


async def test_an_unreachable_cloudwatch_is_an_aws_error_when_reading_the_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    closed = session.AwsSettings(
        region="eu-central-1", endpoint_url="http://127.0.0.1:9", max_attempts=0
    )
    with pytest.raises(errors.AwsError, match="cannot read my-logs/fb-web-1_shop_nginx"):
        await shipper(session.make_client(closed, "logs")).shipped_tail()
