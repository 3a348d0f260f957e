"""A pod's volumes as the fleet mounts them, resolved as the kubelet's volume plugins
resolve them (``pkg/volume/configmap``, ``secret``, ``downwardapi``, ``projected``).
Pure: the ConfigMaps, Secrets and tokens come in as values (``Sources``).

The fleet has two kinds of volume: ``empty_dir`` and ``files`` (every file already
resolved, base64). A ``files`` volume whose required source is missing goes in as
``pending`` with the kubelet's ``FailedMount`` message beside it (``Result.failures``):
its containers wait in ContainerCreating until the provider puts its files. Volume
types the fleet cannot carry (persistentVolumeClaim, csi, ...) are refused
(``unsupported``), never dropped.
"""

from __future__ import annotations

import base64
import dataclasses
import decimal
import re
from typing import Any

import pydantic

from vk_fargate.fargate import environment, quantities, sizing
from vk_fargate.fleet import models

JSON = dict[str, Any]
DEFAULT_MODE = 0o644  # the kubelet's (420)
TOKEN_EXPIRATION = 3600  # seconds; the API's default for serviceAccountToken sources
FILE_KINDS = ("configMap", "secret", "downwardAPI", "projected")
TokenKey = tuple[str, int]  # (audience, "" for the API server's; expirationSeconds)


class MountError(Exception):
    """A source of a volume is missing (the kubelet's error text, after ``" : "``)."""


@dataclasses.dataclass(frozen=True)
class References:
    config_maps: frozenset[str]
    secrets: frozenset[str]
    tokens: frozenset[TokenKey]


@dataclasses.dataclass(frozen=True)
class Sources:
    """What the volumes read: ConfigMaps and Secrets by name (None: missing), the
    ServiceAccount tokens asked for (a key absent: ``token_error`` says why)."""

    config_maps: dict[str, JSON | None]
    secrets: dict[str, JSON | None]
    tokens: dict[TokenKey, str]
    size: sizing.Size
    token_error: str = "no token"


@dataclasses.dataclass(frozen=True)
class Result:
    volumes: list[models.Volume]
    failures: dict[str, str]  # volume name -> FailedMount message


def _sources(volume: JSON) -> list[JSON]:
    """A files volume as a list of projected-style sources."""
    if "projected" in volume:
        return list((volume["projected"] or {}).get("sources") or [])
    if "secret" in volume:
        src = volume["secret"] or {}
        return [{"secret": {**src, "name": src.get("secretName", "")}}]
    return [{kind: volume[kind] or {}} for kind in FILE_KINDS if kind in volume]


def token_key(source: JSON) -> TokenKey:
    return source.get("audience") or "", int(source.get("expirationSeconds") or TOKEN_EXPIRATION)


def references(pod: JSON) -> References:
    """The ConfigMaps, Secrets and tokens the pod's volumes read."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    tokens: set[TokenKey] = set()
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        for source in _sources(volume):
            if "configMap" in source:
                config_maps.add(source["configMap"].get("name", ""))
            elif "secret" in source:
                secrets.add(source["secret"].get("name", ""))
            elif "serviceAccountToken" in source:
                tokens.add(token_key(source["serviceAccountToken"]))
    return References(frozenset(config_maps), frozenset(secrets), frozenset(tokens))


def unsupported(spec: JSON) -> str | None:
    """Why vk-fargate cannot mount this pod's volumes (Fargate may), or None."""
    reasons = []
    for volume in spec.get("volumes") or []:
        name = volume.get("name")
        if "emptyDir" in volume:
            medium = (volume["emptyDir"] or {}).get("medium") or ""
            if medium not in ("", "Memory"):
                reasons.append(f"{name}: emptyDir medium {medium}")
        elif not any(kind in volume for kind in FILE_KINDS):
            kind = next((k for k in volume if k != "name"), "unknown")
            reasons.append(f"{name}: {kind}")
        else:
            for source in _sources(volume):
                if "clusterTrustBundle" in source or "podCertificate" in source:
                    reasons.append(f"{name}: projected {next(iter(source))}")
    if not reasons:
        return None
    return f"volumes not supported by vk-fargate yet: {', '.join(reasons)}"


def resolve(pod: JSON, sources: Sources) -> Result:
    """Every volume of the pod for the fleet; a files volume whose sources are missing
    is pending, its FailedMount message in ``failures``."""
    result: list[models.Volume] = []
    failures: dict[str, str] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = volume["name"]
        if "emptyDir" in volume:
            result.append(models.Volume(name=name, empty_dir=empty_dir(volume["emptyDir"] or {})))
            continue
        try:
            fileset = files(pod, volume, sources)
        except MountError as exc:
            failures[name] = failed(name, str(exc))
            fileset = models.FileSet(default_mode=_default_mode(volume), pending=True)
        result.append(models.Volume(name=name, files=fileset))
    return Result(result, failures)


def failed(volume: str, reason: str) -> str:
    """The kubelet's FailedMount message."""
    return f'MountVolume.SetUp failed for volume "{volume}" : {reason}'


def empty_dir(source: JSON) -> models.EmptyDir:
    limit = source.get("sizeLimit")
    mib = None
    if limit is not None:
        amount = quantities.parse(limit) / (1 << 20)
        mib = max(1, int(amount.to_integral_value(rounding=decimal.ROUND_CEILING)))
    if source.get("medium") == "Memory":
        return models.EmptyDir(medium="Memory", size_limit_mib=mib)
    return models.EmptyDir(size_limit_mib=mib)


def _default_mode(volume: JSON) -> int:
    kind = next((k for k in FILE_KINDS if k in volume), "")
    mode = (volume.get(kind) or {}).get("defaultMode")
    return DEFAULT_MODE if mode is None else int(mode)


def files(pod: JSON, volume: JSON, sources: Sources) -> models.FileSet:
    """The files of a configMap, secret, downwardAPI or projected volume, or MountError
    (several failing sources of a projected volume: all, as Go's aggregate error)."""
    found: dict[str, models.VolumeFile] = {}
    errors: list[str] = []
    for source in _sources(volume):
        try:
            for item in _payload(pod, source, sources):
                found[item.path] = item
        except MountError as exc:
            if str(exc) not in errors:
                errors.append(str(exc))
        except pydantic.ValidationError as exc:  # a key the atomic writer cannot write
            errors.append(models.invalid(exc))
    if errors:
        raise MountError(errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")
    return models.FileSet(
        default_mode=_default_mode(volume), items=[found[p] for p in sorted(found)]
    )


def _file(path: str, data: bytes, mode: int | None) -> models.VolumeFile:
    return models.VolumeFile(path=path, content=base64.b64encode(data).decode(), mode=mode)


def _payload(pod: JSON, source: JSON, sources: Sources) -> list[models.VolumeFile]:
    if "configMap" in source or "secret" in source:
        return _keys(source, sources)
    if "downwardAPI" in source:
        return [
            _file(item["path"], _downward(pod, item, sources.size).encode(), item.get("mode"))
            for item in source["downwardAPI"].get("items") or []
        ]
    if "serviceAccountToken" in source:
        token = source["serviceAccountToken"]
        value = sources.tokens.get(token_key(token))
        if value is None:
            raise MountError(f"failed to fetch token: {sources.token_error}")
        return [_file(token["path"], value.encode(), None)]
    raise MountError(f"unsupported projected source {', '.join(source)}")


def _keys(source: JSON, sources: Sources) -> list[models.VolumeFile]:
    """A ConfigMap's or a Secret's keys as files (configmap.MakePayload, secret's)."""
    is_cm = "configMap" in source
    ref = source["configMap" if is_cm else "secret"]
    name = ref.get("name", "")
    optional = bool(ref.get("optional"))
    obj = (sources.config_maps if is_cm else sources.secrets).get(name)
    if obj is None:
        if optional:
            return []
        raise MountError(f'{"configmap" if is_cm else "secret"} "{name}" not found')
    contents: dict[str, bytes] = {}
    if is_cm:
        contents.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
        binary = obj.get("binaryData") or {}
    else:
        binary = obj.get("data") or {}
    contents.update({k: base64.b64decode(v) for k, v in binary.items()})
    items = ref.get("items") or []
    if not items:
        return [_file(k, v, None) for k, v in sorted(contents.items())]
    out = []
    for item in items:
        key = item.get("key", "")
        if key not in contents:
            if optional:
                continue
            if is_cm:
                raise MountError(f"configmap references non-existent config key: {key}")
            raise MountError(f"references non-existent secret key: {key}")
        out.append(_file(item.get("path") or key, contents[key], item.get("mode")))
    return out


def _downward(pod: JSON, item: JSON, size: sizing.Size) -> str:
    """A downward API file's text, in the kubelet's formats (fieldpath.FormatMap)."""
    if "resourceFieldRef" in item:
        ref = item["resourceFieldRef"]
        spec = pod.get("spec") or {}
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        container = next((c for c in containers if c["name"] == ref.get("containerName")), None)
        if container is None:
            raise MountError(f"container {ref.get('containerName')!r} not found")
        try:
            return environment.resource_value(container, ref, size)
        except environment.ConfigError as exc:
            raise MountError(str(exc)) from exc
    path = (item.get("fieldRef") or {}).get("fieldPath", "")
    meta = pod["metadata"]
    if path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.partition(".")[2]) or {}
        return "\n".join(f"{k}={go_quote(str(values[k]))}" for k in sorted(values))
    simple = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}
    if path in simple:
        return str(meta.get(simple[path], ""))
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise MountError(f"unsupported fieldPath: {path}")


def go_quote(text: str) -> str:
    """Go's ``%q`` of ``text`` (strconv.Quote), as the kubelet writes label values."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    escapes.update({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"})
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'
