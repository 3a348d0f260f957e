"""The ``aws-observability/aws-logging`` ConfigMap, validated as Fargate does. Pure.

EKS Fargate runs Fluent Bit for every pod, configured by this ConfigMap
(``fargate-facts.md`` §6): at most 5300 characters, keys ``filters.conf``,
``output.conf``, ``parsers.conf`` and ``flb_log_cw`` only. ``validate`` lists every
problem; ``parse`` gives the CloudWatch outputs ``aws.logging.Shipper`` ships to. Other
outputs (Firehose, OpenSearch, Kinesis) are valid but not shipped; ``unshipped_outputs``
names them. Fluent Bit templates (``$(...)``, ``${...}``) are not expanded and are reported.
``grep`` filters are checked as Fluent Bit would (rules, regexes, ``Logical_Op``) and
applied by ``logfilter``; the other filters are valid but not applied.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from vk_fargate import errors
from vk_fargate.aws import logfilter

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

MAX_STREAM_NAME = 512

_TRUE = ("true", "on", "yes", "1")
_FALSE = ("false", "off", "no", "0")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_GROUP_NAME = re.compile(r"^[\w./#-]{1,512}$")


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
    parsed_filters: tuple[logfilter.Filter, ...] = ()  # ``filters``, for ``logfilter``


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
    filters: list[logfilter.Filter] = []
    for index, section in enumerate(parsed["filters.conf"], start=1):
        plugin = (section.get("name") or "").lower()
        if plugin and plugin not in SUPPORTED_FILTERS:
            found.append(
                f"filters.conf: filter {plugin!r} is not supported on Fargate "
                f"({', '.join(SUPPORTED_FILTERS)})"
            )
            continue
        where = f"filters.conf [FILTER] #{index} {plugin}"
        parsed_filter, filter_problems = logfilter.parse_filter(plugin, section.entries, where)
        filters.append(parsed_filter)
        found += filter_problems
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
        parsed_filters=tuple(filters),
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
