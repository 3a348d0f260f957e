"""Fluent Bit's ``grep`` filter, applied to a container's lines as Fargate's router would.
Pure.

Fargate's Fluent Bit reads each container's log into records tagged
``kube.var.log.containers.<pod>_<namespace>_<container>-<container id>.log`` whose
``log`` key holds the line. We ship lines, so a line is the record ``{"log": line}``
and grep rules on ``log`` (or ``$log``) work exactly as there: ``Regex KEY RE`` keeps a
record whose value matches RE anywhere, ``Exclude KEY RE`` drops it; a missing key never
matches. ``Logical_Op legacy`` (the default) keeps a record that matches every Regex and
no Exclude; ``AND``/``OR`` combine the rules of one kind (Fluent Bit refuses to mix kinds
under them). A filter applies to a line when its ``Match`` (``*`` wildcards) matches the
line's tag.

What is not applied is said, never silently dropped: the other filter plugins
(``kubernetes``, ``parser``, ``modify``, ...) and grep rules on other keys (``stream``,
``kubernetes`` metadata: our records do not carry them). Such lines ship unfiltered.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

LOG_KEYS = ("log", "$log")
LOGICAL_OPS = ("legacy", "and", "or")
Entries = Sequence[tuple[str, str]]  # a section's (lower-cased key, value) pairs, in order


@dataclasses.dataclass(frozen=True)
class Rule:
    exclude: bool
    key: str
    pattern: re.Pattern[str]

    def matches(self, record: dict[str, str]) -> bool:
        value = record.get(self.key.removeprefix("$"))
        return value is not None and self.pattern.search(value) is not None


@dataclasses.dataclass(frozen=True)
class Grep:
    match: str
    rules: tuple[Rule, ...]
    logical_op: str = "legacy"

    def keep(self, record: dict[str, str]) -> bool:
        if not self.rules:
            return True
        hits = [rule.matches(record) for rule in self.rules]
        if self.logical_op == "legacy":
            return all(hit != rule.exclude for hit, rule in zip(hits, self.rules, strict=True))
        combined = all(hits) if self.logical_op == "and" else any(hits)
        return not combined if self.rules[0].exclude else combined

    @property
    def on_log_only(self) -> bool:
        return all(rule.key in LOG_KEYS for rule in self.rules)


def parse_grep(entries: Entries, where: str) -> tuple[Grep | None, list[str]]:
    """A ``grep`` filter section, or the reasons Fluent Bit would refuse it."""
    problems: list[str] = []
    rules: list[Rule] = []
    op = "legacy"
    match = "*"
    for key, value in entries:
        if key == "match":
            match = value
        elif key == "logical_op":
            op = value.lower()
            if op not in LOGICAL_OPS:
                problems.append(f"{where}: Logical_Op {value!r} is not one of AND, OR, legacy")
        elif key in ("regex", "exclude"):
            field, _, expression = value.partition(" ")
            expression = expression.strip()
            if not expression:
                problems.append(f"{where}: {key} needs a KEY and a REGEX, got {value!r}")
                continue
            try:
                pattern = re.compile(expression)
            except re.error as exc:
                problems.append(f"{where}: {key} {field} {expression!r} is not a regex: {exc}")
                continue
            rules.append(Rule(key == "exclude", field, pattern))
    if op != "legacy" and len({rule.exclude for rule in rules}) > 1:
        problems.append(f"{where}: Logical_Op {op.upper()} cannot mix Regex and Exclude rules")
    if problems:
        return None, problems
    return Grep(match, tuple(rules), op), []


def tag(*, namespace: str, pod: str, container: str, container_id: str) -> str:
    """The tag Fargate's Fluent Bit gives a container's records."""
    return f"kube.var.log.containers.{pod}_{namespace}_{container}-{container_id}.log"


def tag_matches(pattern: str, tagged: str) -> bool:
    """Fluent Bit's ``Match``: the whole tag, ``*`` standing for any run of characters."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, tagged) is not None


@dataclasses.dataclass(frozen=True)
class Filter:
    """One ``[FILTER]`` of filters.conf, parsed once: its plugin, and its grep if it is one."""

    plugin: str
    grep: Grep | None = None

    @property
    def applied(self) -> bool:
        return self.grep is not None and self.grep.on_log_only


def parse_filter(plugin: str, entries: Entries, where: str) -> tuple[Filter, list[str]]:
    """A filter section (``plugin`` from its Name), or the reasons Fluent Bit would refuse it."""
    if plugin.lower() != "grep":
        return Filter(plugin.lower()), []
    grep, problems = parse_grep(entries, where)
    return Filter("grep", grep), problems


@dataclasses.dataclass(frozen=True)
class Plan:
    """The greps that apply to one container's lines, in config order."""

    greps: tuple[Grep, ...]

    def keep(self, line: str) -> bool:
        record = {"log": line}
        return all(grep.keep(record) for grep in self.greps)


def plan(filters: Iterable[Filter], tagged: str) -> Plan:
    """The applicable greps among ``filters`` for the container tagged ``tagged``."""
    return Plan(
        tuple(
            f.grep
            for f in filters
            if f.grep is not None and f.applied and tag_matches(f.grep.match, tagged)
        )
    )


def not_applied(filters: Iterable[Filter]) -> list[str]:
    """The filters vk-fargate does not apply, named for an event."""
    found = []
    for index, each in enumerate(filters, start=1):
        if each.grep is None:
            found.append(f"#{index} {each.plugin}")
        elif not each.applied:
            keys = sorted({rule.key for rule in each.grep.rules} - set(LOG_KEYS))
            found.append(f"#{index} grep on {', '.join(keys)}")
    return found
