"""Fluent Bit's grep filter on a container's lines (aws.logfilter), with plain values."""

from __future__ import annotations

import pytest

from vk_fargate.aws import logconfig, logfilter

# Fluent Bit's own documentation example.
LINES = ["aaa", "aab", "bbb", "ccc", "ddd", "eee", "fff", "ggg"]
TAG = logfilter.tag(namespace="web", pod="nginx-1", container="nginx", container_id="uid-1")


def grep(*entries: tuple[str, str]) -> logfilter.Grep:
    found, problems = logfilter.parse_grep(entries, "test")
    assert found is not None, problems
    return found


def kept(g: logfilter.Grep, lines: list[str] = LINES) -> list[str]:
    return [line for line in lines if g.keep({"log": line})]


def test_regex_keeps_what_matches_anywhere_in_the_line() -> None:
    assert kept(grep(("regex", "log aa"))) == ["aaa", "aab"]
    assert kept(grep(("regex", "log b$"))) == ["aab", "bbb"]


def test_exclude_drops_what_matches() -> None:
    assert kept(grep(("exclude", "log ^(a|b)"))) == ["ccc", "ddd", "eee", "fff", "ggg"]


def test_the_record_accessor_form_of_log_is_the_same_key() -> None:
    assert kept(grep(("regex", "$log ^a"))) == ["aaa", "aab"]


def test_legacy_ands_regexes_and_ors_excludes() -> None:
    both = grep(("regex", "log ^a"), ("regex", "log b$"))
    assert kept(both) == ["aab"]
    either = grep(("exclude", "log ^a"), ("exclude", "log ^g"))
    assert kept(either) == ["bbb", "ccc", "ddd", "eee", "fff"]
    mixed = grep(("regex", "log ^a"), ("exclude", "log b$"))
    assert kept(mixed) == ["aaa"]


def test_logical_op_or_and_and() -> None:
    assert kept(grep(("logical_op", "OR"), ("regex", "log ^a"), ("regex", "log ^g"))) == [
        "aaa",
        "aab",
        "ggg",
    ]
    drop_both = grep(("logical_op", "and"), ("exclude", "log ^a"), ("exclude", "log b$"))
    assert kept(drop_both) == ["aaa", "bbb", "ccc", "ddd", "eee", "fff", "ggg"]


def test_a_missing_key_never_matches() -> None:
    assert kept(grep(("regex", "stream stdout"))) == []
    assert kept(grep(("exclude", "stream stdout"))) == LINES


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ((("regex", "log"),), "needs a KEY and a REGEX"),
        ((("exclude", "log (unclosed"),), "is not a regex"),
        ((("logical_op", "xor"), ("regex", "log a")), "is not one of AND, OR, legacy"),
        ((("logical_op", "AND"), ("regex", "log a"), ("exclude", "log b")), "cannot mix"),
    ],
)
def test_what_fluent_bit_would_refuse_is_named(
    entries: tuple[tuple[str, str], ...], problem: str
) -> None:
    found, problems = logfilter.parse_grep(entries, "filters.conf [FILTER] #1 grep")
    assert found is None
    assert len(problems) == 1 and problem in problems[0]
    assert problems[0].startswith("filters.conf [FILTER] #1 grep: ")


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("*", True),
        ("kube.*", True),
        ("kube.var.log.containers.nginx-1_web_*", True),
        (TAG, True),
        ("kube.var.log.containers.nginx-2_*", False),
        ("app.*", False),
        ("kube", False),  # the whole tag, not a prefix
    ],
)
def test_match_is_the_whole_tag_with_wildcards(pattern: str, matches: bool) -> None:
    assert logfilter.tag_matches(pattern, TAG) is matches


def test_a_plan_applies_every_grep_on_log_that_matches_the_tag() -> None:
    sections: list[tuple[str, logfilter.Entries]] = [
        ("grep", [("match", "kube.*"), ("exclude", "log health")]),
        ("grep", [("match", "other.*"), ("exclude", "log GET")]),  # another tag
        ("kubernetes", [("match", "kube.*")]),  # not applied
        ("grep", [("match", "*"), ("regex", "stream stdout")]),  # not on log: not applied
        ("GREP", [("match", "*"), ("exclude", "log ^$")]),
    ]
    filters = [logfilter.parse_filter(name, entries, "")[0] for name, entries in sections]
    plan = logfilter.plan(filters, TAG)
    lines = ["GET /", "GET /health", "", "POST /"]
    assert [line for line in lines if plan.keep(line)] == ["GET /", "POST /"]
    assert logfilter.not_applied(filters) == ["#3 kubernetes", "#4 grep on stream"]


def test_the_configmap_reports_a_bad_grep_and_hands_good_ones_over() -> None:
    output = (
        "[OUTPUT]\n    Name cloudwatch_logs\n    Match *\n    region eu-central-1\n"
        "    log_group_name g\n    log_stream_prefix p-\n"
    )
    bad = "[FILTER]\n    Name grep\n    Match *\n    Regex log ([\n"
    problems = logconfig.validate({"output.conf": output, "filters.conf": bad})
    assert len(problems) == 1
    assert problems[0].startswith("filters.conf [FILTER] #1 grep: regex log '(['")
    good = "[FILTER]\n    Name grep\n    Match *\n    Exclude log ^DEBUG\n"
    config = logconfig.parse({"output.conf": output, "filters.conf": good})
    assert config.parsed_filters == (
        logfilter.Filter("grep", grep(("match", "*"), ("exclude", "log ^DEBUG"))),
    )
    assert not logfilter.plan(config.parsed_filters, TAG).keep("DEBUG x")
