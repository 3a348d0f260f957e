"""Tests of aws.logconfig: the aws-logging ConfigMap as Fargate validates and reads it
(plain values)."""

from __future__ import annotations

import pytest

from vk_fargate import errors
from vk_fargate.aws import logconfig

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
