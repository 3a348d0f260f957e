"""Tests of aws.logging's Shipper against moto's CloudWatch Logs (the session's moto server).

moto checks none of PutLogEvents' limits, so every shipping test records the batches the
shipper sent and asserts the limits on them itself, then reads the stream back with
GetLogEvents to check that exactly the input arrived, in order, once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any

import botocore.exceptions
import pytest

from vk_fargate import errors
from vk_fargate.aws import logconfig, session
from vk_fargate.aws import logging as awslogs

NOW = int(time.time() * 1000)


@pytest.fixture
def logs(clients: session.Clients) -> Any:
    return clients.logs


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
