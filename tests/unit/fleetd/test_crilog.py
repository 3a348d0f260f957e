"""Tests of the CRI log format (crilog.Writer/parse) and of serving it (logs options)."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest

from vk_fargate.fleetd import crilog, logs

MAX = crilog.MAX_LINE
UTC = datetime.UTC


def records(text: str) -> list[crilog.Record]:
    parsed = [crilog.parse(line) for line in text.splitlines(keepends=True)]
    assert None not in parsed, text
    return [r for r in parsed if r is not None]


def shape(text: str) -> list[tuple[str, bool, int]]:
    """(stream, full, length of text) of every record written."""
    return [(r.stream, r.full, len(r.text)) for r in records(text)]


def reassemble(recs: list[crilog.Record]) -> list[str]:
    """The original lines, joining P pieces up to their F."""
    lines, current = [], ""
    for r in recs:
        current += r.text
        if r.full:
            lines.append(current)
            current = ""
    assert current == "", "a line ended without an F record"
    return lines


# Writer


def test_whole_lines_are_full_records() -> None:
    out = io.StringIO()
    crilog.Writer(out, "stdout").feed("hello\nworld with  spaces \n\n")
    got = records(out.getvalue())
    assert [(r.stream, r.full, r.text) for r in got] == [
        ("stdout", True, "hello"),
        ("stdout", True, "world with  spaces "),
        ("stdout", True, ""),
    ]


def test_partial_data_is_buffered_until_its_newline() -> None:
    out = io.StringIO()
    writer = crilog.Writer(out, "stderr")
    writer.feed("abc")
    writer.feed("def")
    assert out.getvalue() == ""
    writer.feed("ghi\nrest")
    assert [(r.stream, r.full, r.text) for r in records(out.getvalue())] == [
        ("stderr", True, "abcdefghi")
    ]


def test_close_flushes_the_rest_as_a_full_line() -> None:
    out = io.StringIO()
    writer = crilog.Writer(out, "stdout")
    writer.feed("one\ntwo")
    writer.close()
    assert [r.text for r in records(out.getvalue())] == ["one", "two"]
    assert records(out.getvalue())[-1].full
    writer.close()  # nothing left: writes nothing more
    assert len(records(out.getvalue())) == 2


def test_close_without_pending_data_writes_nothing() -> None:
    out = io.StringIO()
    writer = crilog.Writer(out, "stdout")
    writer.feed("done\n")
    before = out.getvalue()
    writer.close()
    assert out.getvalue() == before


@pytest.mark.parametrize(
    ("length", "want"),
    [
        (MAX - 1, [(True, MAX - 1)]),
        (MAX, [(True, MAX)]),
        (MAX + 1, [(False, MAX), (True, 1)]),
        (2 * MAX, [(False, MAX), (True, MAX)]),
        (2 * MAX + 10, [(False, MAX), (False, MAX), (True, 10)]),
    ],
)
def test_lines_longer_than_max_line_are_split_into_p_pieces_then_f(
    length: int, want: list[tuple[bool, int]]
) -> None:
    out = io.StringIO()
    line = "".join(chr(ord("a") + i % 26) for i in range(length))
    crilog.Writer(out, "stdout").feed(line + "\n")
    got = records(out.getvalue())
    assert [(r.full, len(r.text)) for r in got] == want
    assert reassemble(got) == [line]


def test_a_long_line_without_newline_is_written_in_pieces_as_it_comes() -> None:
    out = io.StringIO()
    writer = crilog.Writer(out, "stdout")
    writer.feed("x" * (MAX + 5))
    assert shape(out.getvalue()) == [("stdout", False, MAX)]
    writer.feed("y" * 5)
    assert shape(out.getvalue()) == [("stdout", False, MAX)]
    writer.close()
    assert shape(out.getvalue()) == [("stdout", False, MAX), ("stdout", True, 10)]
    assert reassemble(records(out.getvalue())) == ["x" * (MAX + 5) + "y" * 5]


def test_round_trip_of_many_lines_fed_in_odd_chunks() -> None:
    lines = ["short", "", "z" * (MAX * 3 + 7), "tab\tand unicode: héllo ✓", "m" * MAX]
    data = "".join(line + "\n" for line in lines)
    out = io.StringIO()
    writer = crilog.Writer(out, "stdout")
    for start in range(0, len(data), 4099):
        writer.feed(data[start : start + 4099])
    writer.close()
    assert reassemble(records(out.getvalue())) == lines


def test_written_timestamps_parse_back_to_the_time_of_writing() -> None:
    out = io.StringIO()
    before = datetime.datetime.now(UTC)
    crilog.Writer(out, "stdout").feed("a\nb\n")
    after = datetime.datetime.now(UTC)
    for record in records(out.getvalue()):
        assert record.time.endswith("Z")
        moment = crilog.parse_timestamp(record.time)
        assert moment.tzinfo is not None
        assert before - datetime.timedelta(microseconds=1) <= moment <= after


# timestamps and parse


def test_timestamp_is_rfc3339_nano_utc() -> None:
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert crilog.timestamp(moment) == "2024-05-06T07:08:09.123456000Z"
    assert crilog.parse_timestamp(crilog.timestamp(moment)) == moment


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2024-05-06T07:08:09.123456789Z", 123456),
        ("2024-05-06T07:08:09.1Z", 100000),
        ("2024-05-06T07:08:09Z", 0),
    ],
)
def test_parse_timestamp_truncates_to_microseconds(text: str, want: int) -> None:
    assert crilog.parse_timestamp(text) == datetime.datetime(2024, 5, 6, 7, 8, 9, want, tzinfo=UTC)


T = "2024-05-06T07:08:09.123456789Z"


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (f"{T} stdout F hello world\n", crilog.Record(T, "stdout", True, "hello world")),
        (f"{T} stderr P piece", crilog.Record(T, "stderr", False, "piece")),
        (f"{T} stdout F \n", crilog.Record(T, "stdout", True, "")),
        (f"{T} stdout F\n", crilog.Record(T, "stdout", True, "")),
        (f"{T} stdout F  two  spaces \n", crilog.Record(T, "stdout", True, " two  spaces ")),
        (f"{T} stdout X text\n", None),
        ("garbage stdout F text\n", None),
        ("just some text\n", None),
        ("\n", None),
    ],
)
def test_parse(line: str, want: crilog.Record | None) -> None:
    assert crilog.parse(line) == want


def test_render_with_and_without_timestamps() -> None:
    full = crilog.Record("2024-01-01T00:00:00.000000000Z", "stdout", True, "hi")
    piece = crilog.Record("2024-01-01T00:00:00.000000000Z", "stdout", False, "pi")
    assert full.render(with_timestamp=False) == "hi\n"
    assert full.render(with_timestamp=True) == "2024-01-01T00:00:00.000000000Z hi\n"
    assert piece.render(with_timestamp=False) == "pi"


# serving: logs._selected and logs.stream

T0 = datetime.datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: int) -> str:
    return crilog.timestamp(T0 + datetime.timedelta(seconds=seconds))


# Four lines; line "c" comes in two pieces.
LOG = [
    crilog.Record(at(0), "stdout", True, "a"),
    crilog.Record(at(1), "stderr", True, "b"),
    crilog.Record(at(2), "stdout", False, "c1"),
    crilog.Record(at(3), "stdout", True, "c2"),
    crilog.Record(at(4), "stdout", True, "d"),
]


def texts(recs: list[crilog.Record]) -> list[str]:
    return [r.text for r in recs]


@pytest.mark.parametrize(
    ("options", "want"),
    [
        (logs.Options(), ["a", "b", "c1", "c2", "d"]),
        (logs.Options(tail_lines=0), []),
        (logs.Options(tail_lines=1), ["d"]),
        (logs.Options(tail_lines=2), ["c1", "c2", "d"]),  # a line is all its pieces
        (logs.Options(tail_lines=4), ["a", "b", "c1", "c2", "d"]),
        (logs.Options(tail_lines=100), ["a", "b", "c1", "c2", "d"]),
        (logs.Options(since=T0 + datetime.timedelta(seconds=1)), ["b", "c1", "c2", "d"]),
        (logs.Options(since=T0 + datetime.timedelta(seconds=4)), ["d"]),
        (logs.Options(since=T0 + datetime.timedelta(seconds=5)), []),
        (logs.Options(since=T0 - datetime.timedelta(days=1)), ["a", "b", "c1", "c2", "d"]),
        (logs.Options(since=T0 + datetime.timedelta(seconds=1), tail_lines=2), ["c1", "c2", "d"]),
        (logs.Options(since=T0 + datetime.timedelta(seconds=3), tail_lines=5), ["c2", "d"]),
    ],
)
def test_selected(options: logs.Options, want: list[str]) -> None:
    assert texts(logs._selected(list(LOG), options)) == want


def test_selected_keeps_a_trailing_unfinished_line_as_a_line() -> None:
    unfinished = [*LOG, crilog.Record(at(5), "stdout", False, "e1")]
    assert texts(logs._selected(unfinished, logs.Options(tail_lines=1))) == ["e1"]
    assert texts(logs._selected(unfinished, logs.Options(tail_lines=2))) == ["d", "e1"]


def write_log(path: Path, recs: list[crilog.Record], tail: str = "") -> Path:
    path.write_text(
        "".join(f"{r.time} {r.stream} {'F' if r.full else 'P'} {r.text}\n" for r in recs) + tail
    )
    return path


async def collect(path: Path, options: logs.Options) -> bytes:
    return b"".join([chunk async for chunk in logs.stream(path, options, active=lambda: False)])


async def test_stream_everything(tmp_path: Path) -> None:
    path = write_log(tmp_path / "0.log", LOG)
    assert await collect(path, logs.Options()) == b"a\nb\nc1c2\nd\n"


async def test_stream_skips_lines_that_are_not_records_and_an_unfinished_last_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "0.log"
    path.write_text(f"garbage line\n{at(0)} stdout F a\n{at(1)} stdout F b-being-writ")
    assert await collect(path, logs.Options()) == b"a\n"


@pytest.mark.parametrize(
    ("options", "want"),
    [
        (logs.Options(tail_lines=0), b""),
        (logs.Options(tail_lines=1), b"d\n"),
        (logs.Options(tail_lines=2), b"c1c2\nd\n"),
        (logs.Options(since=T0 + datetime.timedelta(seconds=3)), b"c2\nd\n"),
        (logs.Options(limit_bytes=1), b"a"),
        (logs.Options(limit_bytes=3), b"a\nb"),
        (logs.Options(limit_bytes=5), b"a\nb\nc"),
        (logs.Options(limit_bytes=1000), b"a\nb\nc1c2\nd\n"),
        (logs.Options(tail_lines=1, limit_bytes=1), b"d"),
        (
            logs.Options(timestamps=True, tail_lines=2),
            f"{at(2)} c1{at(3)} c2\n{at(4)} d\n".encode(),
        ),
        (logs.Options(timestamps=True, limit_bytes=10), at(0).encode()[:10]),
    ],
)
async def test_stream_options(tmp_path: Path, options: logs.Options, want: bytes) -> None:
    path = write_log(tmp_path / "0.log", LOG)
    assert await collect(path, options) == want


async def test_stream_limit_bytes_counts_bytes_not_characters(tmp_path: Path) -> None:
    path = write_log(tmp_path / "0.log", [crilog.Record(at(0), "stdout", True, "héllo")])
    assert await collect(path, logs.Options(limit_bytes=3)) == "hé".encode()
    assert await collect(path, logs.Options(limit_bytes=100)) == "héllo\n".encode()


async def test_stream_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert await collect(tmp_path / "nope.log", logs.Options()) == b""
    assert await collect(tmp_path / "nope.log", logs.Options(follow=True)) == b""


async def test_stream_follow_ends_when_the_instance_is_over(tmp_path: Path) -> None:
    path = write_log(tmp_path / "0.log", LOG)
    options = logs.Options(follow=True, tail_lines=1)
    assert await collect(path, options) == b"d\n"


async def test_stream_follow_sends_what_is_written_while_following(tmp_path: Path) -> None:
    """The instance writes more (and finishes a half-written line) then ends."""
    path = write_log(tmp_path / "0.log", LOG[:2], tail=f"{at(2)} stdout F hal")
    polls = []

    def active() -> bool:
        polls.append(True)
        if len(polls) == 1:
            with path.open("a") as out:
                out.write(f"f\n{at(3)} stdout F more\n{at(4)} stdout F unfinish")
            return True
        return False

    options = logs.Options(follow=True, tail_lines=1)
    got = b"".join([chunk async for chunk in logs.stream(path, options, active=active)])
    assert got == b"b\nhalf\nmore\n"
    assert len(polls) == 2


async def test_stream_follow_honours_limit_bytes_across_new_data(tmp_path: Path) -> None:
    path = write_log(tmp_path / "0.log", LOG[:1])
    calls = []

    def active() -> bool:
        calls.append(True)
        with path.open("a") as out:
            out.write(f"{at(9)} stdout F 0123456789\n")
        return len(calls) < 3  # ends the stream even if the budget were ignored

    options = logs.Options(follow=True, limit_bytes=6)
    got = b"".join([chunk async for chunk in logs.stream(path, options, active=active)])
    assert got == b"a\n0123"
    assert len(calls) == 1
