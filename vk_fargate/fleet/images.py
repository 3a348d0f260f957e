"""How container image references and image configs are read, as containerd and the kubelet do.

The provider needs these rules to validate images and default ``imagePullPolicy``;
fleetd needs them to pull images and run containers. Both use this one pure module
so they cannot disagree. References follow the docker/distribution grammar with
containerd's normalization (``nginx`` is ``docker.io/library/nginx:latest``);
argv, environment and working directory follow the kubelet and containerd's CRI.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<registry>{_DOMAIN})/(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
# The digest algorithms containerd accepts, with the length of their lowercase hex.
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
_NAME_MAX = 255


class InvalidImageName(ValueError):
    """An image reference that cannot be parsed; the message is the kubelet's."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """A normalized image reference; ``tag`` is "latest" when neither tag nor digest was given."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``registry/repository``, e.g. "docker.io/library/nginx"."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.name}{tag}{digest}"

    def with_digest(self, digest: str) -> str:
        """``name@digest``: what the kubelet reports as ``containerStatuses[].imageID``."""
        if not _valid_digest(digest):
            raise ValueError(f"invalid digest {digest!r}")
        return f"{self.name}@{digest}"


def _valid_digest(digest: str) -> bool:
    algorithm, _, hex_ = digest.partition(":")
    length = _DIGEST_HEX.get(algorithm)
    return length is not None and re.fullmatch(f"[0-9a-f]{{{length}}}", hex_) is not None


def _invalid(text: str, reason: str) -> InvalidImageName:
    quoted = json.dumps(text, ensure_ascii=False)
    return InvalidImageName(
        f"Failed to apply default image tag {quoted}: couldn't parse image name {quoted}: {reason}"
    )


def parse(text: str) -> Reference:
    """Parse and normalize an image reference, or raise ``InvalidImageName``."""
    if re.fullmatch(r"[a-f0-9]{64}", text):
        reason = f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        raise _invalid(text, reason)
    first, slash, rest = text.partition("/")
    # A first component is a registry if it looks like a host (containerd's rule; an
    # uppercase one too, since Docker Hub namespaces cannot be).
    if slash and (first == "localhost" or ":" in first or "." in first or first != first.lower()):
        registry, remainder = first, rest
    else:
        registry, remainder = "docker.io", text
    if registry == "index.docker.io":
        registry = "docker.io"
    if registry == "docker.io" and "/" not in remainder:
        remainder = f"library/{remainder}"
    repository = remainder.partition(":")[0]
    if repository != repository.lower():
        reason = f"invalid reference format: repository name ({repository}) must be lowercase"
        raise _invalid(text, reason)
    match = _REFERENCE.fullmatch(f"{registry}/{remainder}")
    if match is None:
        raise _invalid(text, "invalid reference format")
    if len(match["registry"]) + 1 + len(match["repository"]) > _NAME_MAX:
        raise _invalid(text, f"repository name must not be more than {_NAME_MAX} characters")
    digest = match["digest"]
    if digest is not None and not _valid_digest(digest):
        raise _invalid(text, "invalid checksum digest format")
    tag = match["tag"] if match["tag"] is not None or digest is not None else "latest"
    return Reference(match["registry"], match["repository"], tag, digest)


def default_pull_policy(reference_text: str) -> str:
    """Kubernetes' default ``imagePullPolicy``: "Always" for ":latest" (or no tag), else
    "IfNotPresent". Like Kubernetes, an unparsable reference gets "IfNotPresent" (the
    kubelet reports it as ``InvalidImageName`` later)."""
    try:
        tag = parse(reference_text).tag
    except InvalidImageName:
        return "IfNotPresent"
    return "Always" if tag == "latest" else "IfNotPresent"


def _strings(section: dict[str, Any], key: str) -> tuple[str, ...]:
    value = section.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"image config {key} must be a list of strings, not {value!r}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """What an image says about running it: the ``config`` section of its OCI config."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "K=V"
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_oci(cls, doc: dict[str, Any]) -> ImageConfig:
        """Read an OCI image config document; any key may be missing or null."""
        section = doc.get("config") or {}
        return cls(
            entrypoint=_strings(section, "Entrypoint"),
            cmd=_strings(section, "Cmd"),
            env=_strings(section, "Env"),
            working_dir=section.get("WorkingDir") or "",
            user=section.get("User") or "",
        )


_VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``lookup(name)``'s value, or the reference as
    written when it has none; ``$$`` is a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        value = lookup(match.group(1))
        return match.group(0) if value is None else value

    return _VARIABLE.sub(replace, text)


def expand_all(items: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``command`` or ``args`` expanded from the container's environment, as the kubelet
    does before it starts the container."""
    return [expand(item, env.get) for item in items]


def argv(config: ImageConfig, command: Sequence[str], args: Sequence[str]) -> list[str]:
    """A container's argv: a pod's command replaces Entrypoint and Cmd, its args replace Cmd.

    An Entrypoint of ``[""]`` (Dockerfile ``ENTRYPOINT [""]``) counts as none, as in containerd.
    """
    if command:
        result = [*command, *args]
    else:
        entrypoint = [] if config.entrypoint == ("",) else list(config.entrypoint)
        result = [*entrypoint, *(args or config.cmd)]
    if not result:
        raise ValueError("no command specified")
    return result


def environment(config: ImageConfig, pod_env: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The image's Env overridden by the pod's, by name: image order first, then pod-only
    variables in pod order. Image entries without "=" are ignored."""
    merged: dict[str, str] = {}
    for entry in config.env:
        name, equals, value = entry.partition("=")
        if equals:
            merged[name] = value
    merged.update(pod_env)
    return list(merged.items())


def working_dir(config: ImageConfig, pod_working_dir: str | None) -> str:
    """The pod's working directory if set, else the image's, else "/"."""
    return pod_working_dir or config.working_dir or "/"
