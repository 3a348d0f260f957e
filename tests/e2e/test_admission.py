"""The admission webhooks against the real API server: pods a profile selects come back
from the API steered to fargate-scheduler, everything else is untouched, an 11th
FargateProfile is refused, and no request, however hostile, brings the server down.

The profiles are a fixed in-test source; the server, its TLS, the registration and the
API server that calls it are real. Each configuration has a name of its own and is
unregistered by the fixture whatever the tests did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import waiting
from tests.unit.admission import test_mutation
from vk_fargate import errors
from vk_fargate.admission import registration, server
from vk_fargate.fargate import profiles
from vk_fargate.k8s import client, kube, webhooks
from vk_fargate.k8s import profiles as k8s_profiles
from vk_fargate.kubelet import tls

pytestmark = pytest.mark.e2e

JSON = dict[str, Any]
LABEL = profiles.PROFILE_LABEL
CRD = "fargateprofiles.fargate.vk-fargate.io"
FOUR_MIB = 4 * 1024 * 1024


class FixedProfiles:
    """The webhook's profiles, as the test sets them; counts reads to prove a call."""

    def __init__(self, items: list[profiles.Profile]) -> None:
        self.items = items
        self.calls = 0
        self.broken = False

    def profiles(self) -> list[profiles.Profile]:
        self.calls += 1
        if self.broken:
            raise RuntimeError("the profile cache is broken (on purpose)")
        return list(self.items)

    def count(self) -> int:
        return len(self.items)


@dataclasses.dataclass
class Webhook:
    source: FixedProfiles
    serving: tls.Serving
    url: str
    api: kube.Kube
    name: str
    fargate_ns: str
    other_ns: str


def _pod(namespace: str, **meta: Any) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "admission-", "namespace": namespace, **meta},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "nginx"}],
        },
    }


def _review(**request: Any) -> JSON:
    """An AdmissionReview as the API server sends it, for requests made by hand."""
    return test_mutation.a_review(test_mutation.a_pod(), "fargate-workload", **request)


@contextlib.asynccontextmanager
async def created(api: kube.Kube, pod: JSON) -> AsyncIterator[JSON]:
    """The pod as the API stores it (read back after the create); deleted afterwards."""
    namespace = pod["metadata"]["namespace"]
    made = await api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    path = f"/api/v1/namespaces/{namespace}/pods/{made['metadata']['name']}"
    try:
        yield await api.get(path)
    finally:
        with contextlib.suppress(errors.KubeError):
            await api.delete(path, {"gracePeriodSeconds": 0})


async def _namespace_ready(api: kube.Kube, name: str) -> None:
    await api.create("/api/v1/namespaces", {"metadata": {"name": name}})

    async def default_sa() -> bool:  # pod creation is refused until it exists
        accounts = await api.get(f"/api/v1/namespaces/{name}/serviceaccounts")
        return any(sa["metadata"]["name"] == "default" for sa in accounts["items"])

    await waiting.until(default_sa, what=f"the default ServiceAccount of {name}")


@pytest.fixture(scope="module")
async def webhook(api: client.ApiClient) -> AsyncIterator[Webhook]:
    suffix = uuid.uuid4().hex[:8]
    fargate_ns, other_ns = f"fargate-workload-{suffix}", f"other-{suffix}"
    selector = profiles.Selector(namespace=fargate_ns)
    source = FixedProfiles([profiles.Profile(name="fargate", selectors=[selector])])
    serving = tls.server_context(client_ca=None, hosts=("127.0.0.1",))
    admission = server.AdmissionServer(source, serving.context)
    port = await admission.start()
    kube_api = kube.Kube(api)  # not closed: the session's ApiClient is shared
    hook = Webhook(
        source,
        serving,
        f"https://127.0.0.1:{port}",
        kube_api,
        f"e2e-{suffix}",
        fargate_ns,
        other_ns,
    )
    try:
        for namespace in (fargate_ns, other_ns):
            await _namespace_ready(kube_api, namespace)
        documents = registration.documents(
            target=registration.UrlTarget(hook.url), ca_bundle=serving.cert, name=hook.name
        )
        await registration.register(kube_api, documents)

        async def steered() -> bool:  # the API server picks the configuration up shortly
            async with created(kube_api, _pod(fargate_ns)) as pod:
                return bool(pod["spec"]["schedulerName"] == "fargate-scheduler")

        await waiting.until(steered, timeout=30, what="the API server to call the webhook")
        yield hook
    finally:
        await registration.unregister(kube_api, hook.name)
        for kind in (registration.MUTATING, registration.VALIDATING):
            assert await webhooks.get(kube_api, kind, hook.name) is None
        for namespace in (fargate_ns, other_ns):
            with contextlib.suppress(errors.KubeError):
                await kube_api.delete(f"/api/v1/namespaces/{namespace}")
        await admission.stop()


@pytest.fixture(scope="module")
async def https(webhook: Webhook) -> AsyncIterator[aiohttp.ClientSession]:
    """Trusts only the webhook's own certificate (the caBundle the API server got)."""
    context = ssl.create_default_context(cadata=webhook.serving.cert.decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


async def test_a_pod_a_profile_selects_is_steered_to_fargate(webhook: Webhook) -> None:
    pod = _pod(webhook.fargate_ns, labels={"app": "web"})
    async with created(webhook.api, pod) as stored:
        assert stored["spec"]["schedulerName"] == "fargate-scheduler"
        assert stored["metadata"]["labels"] == {"app": "web", LABEL: "fargate"}
    async with created(webhook.api, _pod(webhook.fargate_ns)) as stored:  # no labels at all
        assert stored["spec"]["schedulerName"] == "fargate-scheduler"
        assert stored["metadata"]["labels"] == {LABEL: "fargate"}


@pytest.mark.parametrize(
    ("where", "meta"),
    [
        ("other", {"labels": {"app": "web"}}),
        ("fargate", {"annotations": {"eks.amazonaws.com/compute-type": "ec2"}}),
    ],
    ids=["another namespace", "opted out"],
)
async def test_other_pods_are_seen_but_untouched(webhook: Webhook, where: str, meta: JSON) -> None:
    namespace = webhook.other_ns if where == "other" else webhook.fargate_ns
    calls = webhook.source.calls
    async with created(webhook.api, _pod(namespace, **meta)) as stored:
        assert stored["spec"]["schedulerName"] == "default-scheduler"
        assert LABEL not in (stored["metadata"].get("labels") or {})
    assert webhook.source.calls > calls  # the API server did ask


async def test_a_broken_webhook_blocks_no_pod(
    webhook: Webhook, https: aiohttp.ClientSession
) -> None:
    """failurePolicy Ignore: a 500 lets the pod through unsteered; the server lives on."""
    webhook.source.broken = True
    try:
        async with https.post(webhook.url + server.MUTATE_PATH, json=_review()) as response:
            assert response.status == 500
        async with created(webhook.api, _pod(webhook.fargate_ns)) as stored:
            assert stored["spec"]["schedulerName"] == "default-scheduler"
    finally:
        webhook.source.broken = False
    async with created(webhook.api, _pod(webhook.fargate_ns)) as stored:
        assert stored["spec"]["schedulerName"] == "fargate-scheduler"


def _documents(webhook: Webhook) -> list[JSON]:
    return registration.documents(
        target=registration.UrlTarget(webhook.url),
        ca_bundle=webhook.serving.cert,
        name=webhook.name,
    )


async def test_registering_again_changes_nothing(webhook: Webhook) -> None:
    kinds = (registration.MUTATING, registration.VALIDATING)
    before = [await webhooks.get(webhook.api, kind, webhook.name) for kind in kinds]
    stored = await registration.register(webhook.api, _documents(webhook))
    assert [s["metadata"]["resourceVersion"] for s in stored] == [
        b["metadata"]["resourceVersion"] for b in before if b is not None
    ]
    pods, limit = stored[0]["webhooks"][0], stored[1]["webhooks"][0]
    assert (pods["failurePolicy"], limit["failurePolicy"]) == ("Ignore", "Fail")
    assert pods["clientConfig"]["url"] == webhook.url + "/mutate-pods"
    assert limit["clientConfig"]["url"] == webhook.url + "/validate-profiles"
    assert pods["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["vk-fargate-system"],
        }
    ]
    assert [r["resources"] for r in (pods["rules"][0], limit["rules"][0])] == [
        ["pods"],
        ["fargateprofiles"],
    ]


async def test_registering_replaces_a_changed_configuration(webhook: Webhook) -> None:
    path = webhooks.path(registration.MUTATING, webhook.name)
    patch = [{"op": "replace", "path": "/webhooks/0/timeoutSeconds", "value": 30}]
    changed = await webhook.api.patch(path, patch, kind=kube.JSON_PATCH)
    assert changed["webhooks"][0]["timeoutSeconds"] == 30
    stored = await registration.register(webhook.api, _documents(webhook))
    assert stored[0]["webhooks"][0]["timeoutSeconds"] == registration.TIMEOUT_SECONDS
    assert stored[0]["metadata"]["resourceVersion"] != changed["metadata"]["resourceVersion"]


def test_in_a_cluster_the_webhook_is_reached_through_its_service() -> None:
    target = registration.ServiceTarget(namespace="vk-fargate-system", name="vk-fargate")
    mutating, validating = registration.documents(target=target, ca_bundle=b"PEM")
    assert mutating["webhooks"][0]["clientConfig"] == {
        "caBundle": "UEVN",
        "service": {
            "namespace": "vk-fargate-system",
            "name": "vk-fargate",
            "path": "/mutate-pods",
            "port": 443,
        },
    }
    assert validating["webhooks"][0]["clientConfig"]["service"]["path"] == "/validate-profiles"


@pytest.fixture
async def profile_crd(webhook: Webhook) -> AsyncIterator[None]:
    """The FargateProfile CRD, installed for the test unless it already was."""
    path = f"{k8s_profiles.CRD_PATH}/{CRD}"
    try:
        await webhook.api.create(k8s_profiles.CRD_PATH, k8s_profiles.crd())
        ours = True
    except errors.KubeError as exc:
        if not exc.conflict:
            raise
        ours = False

    async def established() -> bool:
        conditions = (await webhook.api.get(path)).get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    await waiting.until(established, what=f"CRD {CRD} to be established")
    try:
        yield
    finally:
        if ours:
            await webhook.api.delete(path)

            async def gone() -> bool:
                try:
                    await webhook.api.get(path)
                except errors.KubeError as exc:
                    return exc.not_found
                return False

            await waiting.until(gone, what=f"CRD {CRD} to be deleted")


@pytest.mark.usefixtures("profile_crd")
async def test_the_eleventh_profile_is_refused(webhook: Webhook) -> None:
    kept = webhook.source.items
    name = f"p-{uuid.uuid4().hex[:8]}"
    spec = {"selectors": [{"namespace": "nowhere"}]}
    selector = profiles.Selector(namespace="nowhere")
    try:
        webhook.source.items = [
            profiles.Profile(name=f"p{i}", selectors=[selector]) for i in range(10)
        ]
        with pytest.raises(errors.KubeError) as refused:
            await k8s_profiles.create(webhook.api, name, spec)
        assert refused.value.status == 403
        assert "at most 10 Fargate profiles (it has 10)" in refused.value.message
        webhook.source.items = webhook.source.items[:9]
        await k8s_profiles.create(webhook.api, name, spec)  # the 10th is fine
        await k8s_profiles.delete(webhook.api, name)
    finally:
        webhook.source.items = kept


HOSTILE = [
    ("not JSON", b"{not json", "application/json", "not JSON"),
    ("truncated JSON", json.dumps(_review()).encode()[:-7], "application/json", "not JSON"),
    ("wrong kind", json.dumps(_review() | {"kind": "Pod"}).encode(), "application/json", "kind"),
    ("no uid", json.dumps(_review(uid="")).encode(), "application/json", "uid"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json", "not JSON"),
    ("text/plain", json.dumps(_review()).encode(), "text/plain", "application/json"),
    ("no content type", json.dumps(_review()).encode(), "", "application/json"),
    ("4 MiB", b" " * FOUR_MIB, "application/json", "larger than"),
]


@pytest.mark.parametrize(("body", "content_type", "says"), [h[1:] for h in HOSTILE],
                         ids=[h[0] for h in HOSTILE])  # fmt: skip
async def test_hostile_requests_are_400_and_the_server_lives_on(
    webhook: Webhook, https: aiohttp.ClientSession, body: bytes, content_type: str, says: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    url = webhook.url + server.MUTATE_PATH
    skip = () if content_type else ("Content-Type",)  # really none, not aiohttp's default
    async with https.post(url, data=body, headers=headers, skip_auto_headers=skip) as reply:
        assert reply.status == 400
        assert says in await reply.text()
    await _still_serving(webhook, https)


async def test_a_huge_chunked_body_is_400(webhook: Webhook, https: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit counts bytes
        for _ in range(FOUR_MIB // 65536):
            yield b" " * 65536

    headers = {"Content-Type": "application/json"}
    async with https.post(webhook.url + server.MUTATE_PATH, data=chunks(), headers=headers) as r:
        assert r.status == 400
        assert "larger than" in await r.text()
    await _still_serving(webhook, https)


async def _still_serving(webhook: Webhook, https: aiohttp.ClientSession) -> None:
    async with https.get(webhook.url + server.HEALTH_PATH) as health:
        assert (health.status, await health.text()) == (200, "ok")
    async with https.post(webhook.url + server.MUTATE_PATH, json=_review(uid="alive")) as reply:
        assert reply.status == 200
        assert (await reply.json())["response"]["uid"] == "alive"


BODIES = (
    st.binary(max_size=2048)
    | test_mutation.JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | test_mutation.mutated_reviews().map(lambda case: json.dumps(case[0]).encode())
)
CONTENT_TYPES = st.sampled_from(["application/json"] * 4 + ["text/plain", "application/x-www"])


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=BODIES,
    content_type=CONTENT_TYPES,
    path=st.sampled_from(["/mutate-pods", "/validate-profiles"]),
)
async def test_random_requests_never_get_a_server_error(
    webhook: Webhook, https: aiohttp.ClientSession, body: bytes, content_type: str, path: str
) -> None:
    headers = {"Content-Type": content_type}
    async with https.post(webhook.url + path, data=body, headers=headers) as reply:
        assert reply.status in (200, 400), await reply.text()
        if reply.status == 200:
            uid = json.loads(body)["request"]["uid"]
            assert (await reply.json())["response"]["uid"] == uid
