"""What a pod's microVM spec is built from, read from the cluster: the ConfigMaps and
Secrets its environment and its volumes name (one GET each, together), its namespace's
Services and the ``kubernetes`` Service (from the services informer, never a LIST per
pod), its image pull secrets, and its volumes' ServiceAccount tokens (``Tokens``).
Handed to the pure translations (``fargate.microvms``, ``fargate.volumes``) as values.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable

from vk_fargate import errors
from vk_fargate.fargate import environment, microvms, sizing, volumes
from vk_fargate.k8s import apiserver, events, kube, pods

Services = Callable[[str], list[kube.JSON]]  # a namespace's Services, from a watch
# A ConfigMap or Secret (kind "configMap" or "secret", namespace, name); None: missing.
Fetch = Callable[[str, str, str], Awaitable[kube.JSON | None]]
TOKEN_REFRESH = 0.8  # of a token's life, after which it is asked for again (the kubelet's)
TOKEN_MAX_AGE = 24 * 3600.0  # seconds: and at least this often


async def get_object(api: kube.Kube, kind: str, namespace: str, name: str) -> kube.JSON | None:
    """ConfigMap or Secret ``name``, or None when there is none (one GET)."""
    try:
        if kind == "configMap":
            return await pods.config_map(api, namespace, name)
        return await pods.secret(api, namespace, name)
    except errors.KubeError as exc:
        if exc.not_found:
            return None
        raise


class Tokens:
    """The ServiceAccount tokens of pods' volumes, bound to each pod, kept per pod until
    80% of their life (or 24 h) has passed, as the kubelet's token manager keeps them:
    placement and the volume sync share them, so a token is asked for once per life."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        # pod UID -> (audience, expirationSeconds) -> (token, when to ask again)
        self._held: dict[str, dict[volumes.TokenKey, tuple[str, float]]] = {}

    async def get(
        self, api: kube.Kube, pod: kube.JSON, keys: frozenset[volumes.TokenKey]
    ) -> tuple[dict[volumes.TokenKey, str], str]:
        """The pod's tokens for ``keys``; those that could not be had are absent, the
        API server's reason is the second value."""
        uid = pod["metadata"]["uid"]
        held = self._held.setdefault(uid, {})
        found: dict[volumes.TokenKey, str] = {}
        reason = ""
        for key in sorted(keys):
            now = self.clock()
            cached = held.get(key)
            if cached is not None and now < cached[1]:
                found[key] = cached[0]
                continue
            audience, seconds = key
            try:
                status = await pods.service_account_token(
                    api, pod, audience=audience, expiration_seconds=seconds
                )
            except errors.KubeError as exc:
                if isinstance(exc, errors.KubeUnavailable) or exc.status >= 500:
                    raise
                reason = exc.message
                continue
            life = _life(status.get("expirationTimestamp"), now) or float(seconds)
            held[key] = (status.get("token", ""), now + min(TOKEN_REFRESH * life, TOKEN_MAX_AGE))
            found[key] = held[key][0]
        return found, reason

    def due(self, uid: str) -> float | None:
        """Seconds until a token of pod ``uid`` is to be asked for again, if it has any."""
        times = [at for _, at in self._held.get(uid, {}).values()]
        return max(0.0, min(times) - self.clock()) if times else None

    def forget(self, uid: str) -> None:
        self._held.pop(uid, None)


def _life(expires: str | None, now: float) -> float | None:
    if not expires:
        return None
    moment = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
    return max(moment - now, 0.0)


async def volume_sources(
    api: kube.Kube,
    pod: kube.JSON,
    size: sizing.Size,
    tokens: Tokens,
    *,
    fetch: Fetch | None = None,
) -> volumes.Sources:
    """What the pod's volumes read, with ``fetch`` (a GET each by default)."""
    namespace = pod["metadata"]["namespace"]
    refs = volumes.references(pod)
    read = fetch or memo(api)

    async def get(kind: str, name: str) -> tuple[str, kube.JSON | None]:
        return name, await read(kind, namespace, name)

    maps = dict(await asyncio.gather(*(get("configMap", n) for n in sorted(refs.config_maps))))
    found = dict(await asyncio.gather(*(get("secret", n) for n in sorted(refs.secrets))))
    held, reason = await tokens.get(api, pod, refs.tokens)
    return volumes.Sources(maps, found, held, size, token_error=reason or "no token")


def memo(api: kube.Kube) -> Fetch:
    """A ``Fetch`` that GETs each object once (the environment and the volumes of one
    pod read through it: a ConfigMap both name is read once)."""
    held: dict[tuple[str, str, str], kube.JSON | None] = {}

    async def fetch(kind: str, namespace: str, name: str) -> kube.JSON | None:
        key = (kind, namespace, name)
        if key not in held:
            held[key] = await get_object(api, kind, namespace, name)
        return held[key]

    return fetch


class ApiEndpoint:
    """The API server's ``address:port`` for pods' service routes, read at most once a
    minute (one GET), not once per pod."""

    TTL = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: tuple[float, str | None] | None = None

    async def get(self, api: kube.Kube) -> str | None:
        if self._held is None or self.clock() >= self._held[0]:
            self._held = (self.clock() + self.TTL, await apiserver.endpoint(api))
        return self._held[1]


async def environment_sources(
    api: kube.Kube,
    pod: kube.JSON,
    size: sizing.Size,
    *,
    services: Services,
    region: str,
    fetch: Fetch | None = None,
    api_endpoint: str | None = None,
) -> environment.Sources:
    namespace = pod["metadata"]["namespace"]
    config_maps, secrets = microvms.references(pod)
    read = fetch or memo(api)

    async def get(kind: str, name: str) -> tuple[str, kube.JSON | None]:
        return name, await read(kind, namespace, name)

    maps = dict(await asyncio.gather(*(get("configMap", n) for n in config_maps)))
    found = dict(await asyncio.gather(*(get("secret", n) for n in secrets)))
    links = (pod.get("spec") or {}).get("enableServiceLinks", True)
    return environment.Sources(
        config_maps=maps,
        secrets=found,
        services=services(namespace) if links else [],
        master_services=[s for s in services("default") if s["metadata"]["name"] == "kubernetes"],
        node_name_template=microvms.node_name_template(region),
        size=size,
        api_endpoint=api_endpoint,
    )


async def pull_secrets(
    api: kube.Kube, recorder: events.Recorder, pod: kube.JSON
) -> list[kube.JSON]:
    """The pod's image pull secrets (the ServiceAccount's were copied in by its
    admission plugin); those missing are named in the kubelet's warning."""
    namespace = pod["metadata"]["namespace"]
    found, missing = [], []
    for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
        try:
            found.append(await pods.secret(api, namespace, ref.get("name", "")))
        except errors.KubeError as exc:
            if not exc.not_found:
                raise
            missing.append(ref.get("name", ""))
    if missing:
        await recorder.record(
            pod,
            "FailedToRetrieveImagePullSecret",
            f"Unable to retrieve some image pull secrets ({', '.join(missing)}); "
            "attempting to pull the image may not succeed.",
            warning=True,
            component="kubelet",
        )
    return found
