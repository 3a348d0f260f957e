"""The kubelet API against the real control plane: who may read logs is the cluster's
decision (client certificates, TokenReview, SubjectAccessReview), logs stream chunk by
chunk, and `kubectl logs` reaches the backend through the API server.

The backend is a test double of the provider: a canned pod and log chunks the test
controls. Everything else (TLS, API server, RBAC, kubectl) is real.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import kubectl, waiting
from vk_fargate import errors, pki
from vk_fargate.devcluster import binaries, cluster, processes
from vk_fargate.k8s import client, kube
from vk_fargate.kubelet import auth, server, sessions, tls

pytestmark = pytest.mark.e2e

NAMESPACE = "logs-ns"
POD = "web"
NODE = "fargate-ip-127-0-0-1"
LINES = [b"line 1\n", b"line 2\n", b"line 3\n"]


def _pod(namespace: str, name: str, node: str) -> kube.JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-of-{name}"},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": "busybox"}],
            "initContainers": [{"name": "setup", "image": "busybox"}],
        },
    }


class FakeBackend:
    """Serves pods it is given; logs are LINES, or a queue the test feeds on ``follow``."""

    def __init__(self) -> None:
        self.served: dict[tuple[str, str], tuple[kube.JSON, str]] = {}
        self.requests: list[tuple[str, str, server.LogOptions]] = []
        self.feed: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.execs: list[FakeExec] = []
        self.ports: list[int] = []

    def serve(self, pod: kube.JSON, node: str) -> None:
        meta = pod["metadata"]
        self.served[(meta["namespace"], meta["name"])] = (pod, node)

    def pod(self, namespace: str, name: str) -> tuple[kube.JSON, str] | None:
        return self.served.get((namespace, name))

    def pods(self) -> list[kube.JSON]:
        return [pod for pod, _ in self.served.values()]

    async def open_exec(
        self, pod: kube.JSON, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> FakeExec:
        self.execs.append(FakeExec(command))
        return self.execs[-1]

    async def open_attach(
        self, pod: kube.JSON, container: str, *, stdin: bool, tty: bool
    ) -> FakeExec:
        """The container runs ``cat`` (``exit 3`` when stdin is not asked for)."""
        self.execs.append(FakeExec(["cat"] if stdin else ["exit", "3"]))
        return self.execs[-1]

    async def open_port(self, pod: kube.JSON, port: int) -> FakePort:
        self.ports.append(port)
        return FakePort()

    async def logs(
        self, pod: kube.JSON, container: str, options: server.LogOptions
    ) -> AsyncIterator[bytes]:
        self.requests.append((pod["metadata"]["name"], container, options))
        if options.previous:
            raise errors.BadRequest(f'previous terminated container "{container}" not found')
        try:
            if not options.follow:
                for line in LINES:
                    yield line
                return
            while (chunk := await self.feed.get()) is not None:
                yield chunk
        finally:
            self.closed.set()


class FakeExec:
    """A command as the fleet's exec channel runs it (``fleetd/streams.py``): ``cat``
    echoes stdin until stdin closes, ``exit N`` exits N, ``true`` exits 0 and anything
    else cannot start."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        if command == ["true"]:
            self.out.put_nowait(b'\x03{"exit_code": 0}')
        elif command[:1] == ["echo"]:
            self.out.put_nowait(b"\x01" + " ".join(command[1:]).encode() + b"\n")
            self.out.put_nowait(b'\x03{"exit_code": 0}')
        elif command[:1] == ["exit"]:
            self.out.put_nowait(b'\x03{"exit_code": %d}' % int(command[1]))
        elif command != ["cat"]:
            self.out.put_nowait(b'\x03{"error": "exec: \\"%s\\": not found"}' % command[0].encode())

    async def send(self, message: bytes) -> None:
        if message[:1] == b"\x00":
            self.out.put_nowait(b"\x01" + message[1:])
        elif message == b"\xff\x00":
            self.out.put_nowait(b'\x03{"exit_code": 0}')

    async def receive(self) -> bytes | None:
        return None if self.closed.is_set() else await self.out.get()

    async def close(self) -> None:
        self.closed.set()


class FakePort:
    """A TCP connection to an echo server in the pod, as the fleet's port channel
    carries it: what comes on 0 goes back on 1, and a half-close is answered by one."""

    def __init__(self) -> None:
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def send(self, message: bytes) -> None:
        if message[:1] == b"\x00":
            self.out.put_nowait(b"\x01" + message[1:])
        elif message == b"\xff\x00":
            self.out.put_nowait(b"\xff\x01")
            self.out.put_nowait(None)

    async def receive(self) -> bytes | None:
        return await self.out.get()

    async def close(self) -> None:
        self.out.put_nowait(None)


class Kubelet:
    """The server under test and what a test needs to reach it."""

    def __init__(self, backend: FakeBackend, guard: auth.Guard, serving: tls.Serving) -> None:
        self.backend = backend
        self.guard = guard
        self.serving = serving
        self.server = server.KubeletServer(backend, guard, serving.context)
        self.now = 0.0  # the guard's clock: tests move it to expire cached decisions
        self.url = ""

    def client_tls(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        """Trusts only the kubelet's self-signed certificate, checking its SAN."""
        context = ssl.create_default_context(cadata=self.serving.cert.decode())
        if cert is not None and key is not None:
            context.load_cert_chain(cert, key)
        return context

    def logs_url(self, pod: str = POD, container: str = "app", namespace: str = NAMESPACE) -> str:
        return f"{self.url}/containerLogs/{namespace}/{pod}/{container}"


@pytest.fixture(scope="module")
async def kubelet(local_cluster: cluster.Cluster, api: client.ApiClient) -> AsyncIterator[Kubelet]:
    backend = FakeBackend()
    backend.serve(_pod(NAMESPACE, POD, NODE), NODE)
    serving = tls.server_context(
        client_ca=local_cluster.layout.pem("ca.crt"), hosts=("127.0.0.1", "localhost")
    )
    holder: list[Kubelet] = []
    guard = auth.Guard(kube.Kube(api), clock=lambda: holder[0].now, client_cas=serving.client_cas)
    running = Kubelet(backend, guard, serving)
    holder.append(running)
    port = await running.server.start()
    running.url = f"https://127.0.0.1:{port}"
    try:
        yield running
    finally:
        await running.server.stop()


@pytest.fixture
async def apiserver_client(
    kubelet: Kubelet, local_cluster: cluster.Cluster
) -> AsyncIterator[aiohttp.ClientSession]:
    """Presents the certificate kube-apiserver presents to kubelets."""
    pem = local_cluster.layout.pem
    context = kubelet.client_tls(pem("kubelet-client.crt"), pem("kubelet-client.key"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


@pytest.fixture
async def anonymous(kubelet: Kubelet) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=kubelet.client_tls())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def _get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str]:
    async with session.get(url, **kwargs) as response:
        return response.status, await response.text()


async def test_healthz_needs_no_credentials(
    kubelet: Kubelet, anonymous: aiohttp.ClientSession
) -> None:
    assert await _get(anonymous, f"{kubelet.url}/healthz") == (200, "ok")


async def test_no_or_bad_credentials_are_401(
    kubelet: Kubelet, anonymous: aiohttp.ClientSession
) -> None:
    for url in (kubelet.logs_url(), f"{kubelet.url}/pods", kubelet.logs_url() + "?tailLines=-1"):
        status, text = await _get(anonymous, url)
        assert status == 401, url
        assert "client certificate" in text
    before = kubelet.guard.reviews
    status, text = await _get(
        anonymous, kubelet.logs_url(), headers={"Authorization": "Bearer not-a-real-token"}
    )
    assert (status, text) == (401, "Unauthorized: the API server did not accept the bearer token")
    assert kubelet.guard.reviews == before + 1  # a real TokenReview said no


async def test_apiserver_certificate_reads_streamed_logs(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession
) -> None:
    async with apiserver_client.get(kubelet.logs_url(), params={"tailLines": "3"}) as response:
        assert response.status == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers["Content-Type"].startswith("text/plain")
        assert await response.read() == b"".join(LINES)
    assert kubelet.backend.requests[-1] == (POD, "app", server.LogOptions(tail_lines=3))

    status, text = await _get(apiserver_client, kubelet.logs_url(), params={"limitBytes": "10"})
    assert (status, text) == (200, "line 1\nlin")
    status, text = await _get(apiserver_client, kubelet.logs_url(container="setup"))
    assert (status, text) == (200, "line 1\nline 2\nline 3\n")


async def test_certificate_from_another_ca_completes_the_handshake_and_gets_401(
    kubelet: Kubelet, tmp_path: Path
) -> None:
    """As the kubelet: the handshake asks for any certificate; one from another CA
    authenticates nobody, so the answer is 401, not a failed handshake."""
    stranger = pki.issue(pki.new_ca(), "kube-apiserver-kubelet-client", client=True)
    (tmp_path / "c.crt").write_bytes(stranger.cert)
    (tmp_path / "c.key").write_bytes(stranger.key)
    context = kubelet.client_tls(tmp_path / "c.crt", tmp_path / "c.key")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        status, text = await _get(session, kubelet.logs_url())
    assert (status, text) == (
        401,
        "Unauthorized: the client certificate: x509: certificate signed by unknown authority",
    )


async def test_pods_lists_what_the_backend_serves(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession
) -> None:
    async with apiserver_client.get(f"{kubelet.url}/pods") as response:
        assert response.status == 200
        body = await response.json()
    assert body["kind"] == "PodList"
    assert [p["metadata"]["name"] for p in body["items"]] == [POD]


async def test_unknown_pod_or_container_is_404(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession
) -> None:
    status, text = await _get(apiserver_client, kubelet.logs_url(pod="nope"))
    assert (status, text) == (404, f'pod "{NAMESPACE}/nope" does not exist')
    status, text = await _get(apiserver_client, kubelet.logs_url(container="nope"))
    assert (status, text) == (404, f'container "nope" not found in pod "{NAMESPACE}/{POD}"')


async def test_run_answers_the_commands_output(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession, anonymous: aiohttp.ClientSession
) -> None:
    """The old ``/run``: ``cmd`` split at spaces, its output the body, as ``getRun``."""
    run = f"{kubelet.url}/run/{NAMESPACE}/{POD}/app"
    async with apiserver_client.post(run, params={"cmd": "echo hello there"}) as response:
        assert (response.status, await response.text()) == (200, "hello there\n")
    async with apiserver_client.post(run, params={"cmd": "exit 3"}) as response:
        assert response.status == 500
        assert "exit code 3" in await response.text()
    async with anonymous.post(run, params={"cmd": "true"}) as response:
        assert response.status == 401  # who asks is checked first, as for every path
    gone = run.replace(f"/{POD}/", "/nope/")
    async with apiserver_client.post(gone, params={"cmd": "true"}) as response:
        assert (response.status, await response.text()) == (
            404,
            f'pod "{NAMESPACE}/nope" does not exist',
        )


EXEC_CAT = f"/exec/{NAMESPACE}/{POD}/app?command=cat&input=1&output=1"


async def test_exec_answers_plain_errors_before_the_upgrade(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession, anonymous: aiohttp.ClientSession
) -> None:
    # Not a WebSocket (an old SPDY client, or curl): 400, saying what is served.
    status, text = await _get(apiserver_client, kubelet.url + EXEC_CAT)
    assert status == 400
    assert "WebSocket with the v5.channel.k8s.io protocol" in text
    status, text = await _get(apiserver_client, f"{kubelet.url}/portForward/{NAMESPACE}/{POD}")
    assert status == 400
    assert "WebSocket with the SPDY/3.1+portforward.k8s.io protocol" in text
    cases = {
        f"/exec/{NAMESPACE}/{POD}/nope?command=cat&output=1": (
            404,
            f'container "nope" not found in pod "{NAMESPACE}/{POD}"',
        ),
        f"/exec/{NAMESPACE}/gone/app?command=cat&output=1": (
            404,
            f'pod "{NAMESPACE}/gone" does not exist',
        ),
        f"/exec/{NAMESPACE}/{POD}/app?command=cat": (
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
    }
    for path, (code, message) in cases.items():
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await apiserver_client.ws_connect(kubelet.url + path, protocols=("v5.channel.k8s.io",))
        assert refused.value.status == code, path
        assert (await _get(apiserver_client, kubelet.url + path)) == (code, message)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await anonymous.ws_connect(kubelet.url + EXEC_CAT, protocols=("v5.channel.k8s.io",))
    assert refused.value.status == 401


async def test_attach_bridges_the_container_and_its_exit_code(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession
) -> None:
    url = f"{kubelet.url}/attach/{NAMESPACE}/{POD}/app?input=1&output=1&error=1"
    async with apiserver_client.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws:
        await ws.send_bytes(b"\x00hello")
        assert (await ws.receive_bytes(timeout=10)) == b"\x01hello"
        await ws.send_bytes(b"\xff\x00")  # the container's stdin closed: it exits 0
        assert (await ws.receive_bytes(timeout=10)) == b'\x03{"metadata": {}, "status": "Success"}'
    url = f"{kubelet.url}/attach/{NAMESPACE}/{POD}/app?output=1"
    async with apiserver_client.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws:
        status = json.loads((await ws.receive_bytes(timeout=10))[1:])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    status_code, text = await _get(apiserver_client, url)  # not a WebSocket
    assert status_code == 400 and "attach is served over a WebSocket" in text
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await apiserver_client.ws_connect(
            f"{kubelet.url}/attach/{NAMESPACE}/{POD}/nope?output=1",
            protocols=("v5.channel.k8s.io",),
        )
    assert refused.value.status == 404


async def test_exec_sessions_are_bounded_and_end_when_idle(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession
) -> None:
    bounds, idle = kubelet.server.streams, kubelet.server.stream_idle_timeout
    kubelet.server.streams = sessions.Sessions(per_pod=1, total=4)
    try:
        url = kubelet.url + EXEC_CAT
        async with apiserver_client.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws:
            assert ws.protocol == "v5.channel.k8s.io"
            await ws.send_bytes(b"\x00hello")
            assert (await ws.receive_bytes(timeout=10)) == b"\x01hello"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await apiserver_client.ws_connect(url, protocols=("v5.channel.k8s.io",))
            assert refused.value.status == 429
            held = kubelet.backend.execs[-1]
            await ws.send_bytes(b"\xff\x00")  # stdin closed: cat exits 0
            assert (
                await ws.receive_bytes(timeout=10)
            ) == b'\x03{"metadata": {}, "status": "Success"}'
            assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
        await asyncio.wait_for(held.closed.wait(), 10)
        assert (
            kubelet.server.streams.open(
                kubelet.backend.served[(NAMESPACE, POD)][0]["metadata"].get("uid", "")
            )
            == 0
        )

        # A session that moves nothing for the idle timeout is ended, its command too.
        kubelet.server.stream_idle_timeout = 0.5
        async with apiserver_client.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws:
            assert (await ws.receive(timeout=30)).type == aiohttp.WSMsgType.CLOSE
        await asyncio.wait_for(kubelet.backend.execs[-1].closed.wait(), 10)
    finally:
        kubelet.server.streams, kubelet.server.stream_idle_timeout = bounds, idle


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tailLines": "-1"}, "tailLines must be at least 0, not -1"),
        ({"limitBytes": "0"}, "limitBytes must be at least 1, not 0"),
        ({"sinceSeconds": "0"}, "sinceSeconds must be at least 1, not 0"),
        ({"sinceTime": "yesterday"}, "sinceTime must be an RFC 3339 time"),
        ({"sinceSeconds": "5", "sinceTime": "2024-05-01T12:00:00Z"}, "at most one of"),
        ({"follow": "yes"}, "follow must be true, false, 1 or 0, not 'yes'"),
        # An error the backend raises before the first chunk is a status too.
        ({"previous": "true"}, 'previous terminated container "app" not found'),
    ],
)
async def test_bad_parameters_are_400(
    kubelet: Kubelet,
    apiserver_client: aiohttp.ClientSession,
    params: dict[str, str],
    message: str,
) -> None:
    status, text = await _get(apiserver_client, kubelet.logs_url(), params=params)
    assert status == 400
    assert message in text


async def test_follow_streams_each_chunk_and_stops_when_the_client_hangs_up(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession
) -> None:
    backend = kubelet.backend
    backend.closed.clear()
    # Nothing logged yet: the headers still come, after FIRST_CHUNK_WAIT.
    response = await asyncio.wait_for(
        apiserver_client.get(kubelet.logs_url(), params={"follow": "true"}), timeout=60
    )
    try:
        assert response.status == 200
        for chunk in (b"first\n", b"second\n"):
            backend.feed.put_nowait(chunk)
            # Each chunk arrives on its own: the server flushed it without waiting for more.
            assert await asyncio.wait_for(response.content.readexactly(len(chunk)), 60) == chunk
        assert not backend.closed.is_set()
    finally:
        response.close()  # the client hangs up mid-follow
    await asyncio.wait_for(backend.closed.wait(), timeout=60)


async def test_follow_ends_when_the_backend_ends(
    kubelet: Kubelet, apiserver_client: aiohttp.ClientSession
) -> None:
    kubelet.backend.feed.put_nowait(b"only\n")
    kubelet.backend.feed.put_nowait(None)
    status, text = await asyncio.wait_for(
        _get(apiserver_client, kubelet.logs_url(), params={"follow": "1"}), timeout=60
    )
    assert (status, text) == (200, "only\n")


async def _delete(k: kube.Kube, path: str, *, grace: int | None = None) -> None:
    """Delete ``path``; already gone is fine."""
    try:
        await k.delete(path, None if grace is None else {"gracePeriodSeconds": grace})
    except errors.KubeError as exc:
        if not exc.not_found:
            raise


async def _service_account_token(api: kube.Kube, namespace: str, name: str) -> str:
    await api.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}}
    )
    request = await api.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )
    return str(request["status"]["token"])


async def test_service_account_needs_rbac_on_nodes_log(
    kubelet: Kubelet, anonymous: aiohttp.ClientSession, api: client.ApiClient
) -> None:
    k = kube.Kube(api)
    namespace = f"kubelet-authz-{uuid.uuid4().hex[:6]}"
    role = f"{namespace}-node-logs"
    await k.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    try:
        token = await _service_account_token(k, namespace, "reader")
        bearer = {"Authorization": f"Bearer {token}"}
        status, text = await _get(anonymous, kubelet.logs_url(), headers=bearer)
        assert status == 403
        assert f"user=system:serviceaccount:{namespace}:reader" in text
        assert f"subresource=log or proxy, name={NODE}" in text

        await k.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {
                "metadata": {"name": role},
                "rules": [{"apiGroups": [""], "resources": ["nodes/log"], "verbs": ["get"]}],
            },
        )
        await k.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "metadata": {"name": role},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        )
        # The denial is cached (30 s on the guard's clock): no review is sent.
        reviews = kubelet.guard.reviews
        assert (await _get(anonymous, kubelet.logs_url(), headers=bearer))[0] == 403
        assert kubelet.guard.reviews == reviews

        async def allowed() -> str | None:
            kubelet.now += auth.DENIED_TTL + 1
            status, text = await _get(anonymous, kubelet.logs_url(), headers=bearer)
            assert status in (200, 403), text
            return text if status == 200 else None

        assert await waiting.until(allowed, timeout=30, what="RBAC to allow nodes/log") == (
            "line 1\nline 2\nline 3\n"
        )
        # The allowance is cached too.
        reviews = kubelet.guard.reviews
        assert (await _get(anonymous, kubelet.logs_url(), headers=bearer))[0] == 200
        assert kubelet.guard.reviews == reviews
        # nodes/log is not nodes/pods nor nodes/proxy: the pod list stays closed.
        status, text = await _get(anonymous, f"{kubelet.url}/pods", headers=bearer)
        assert status == 403
        assert "subresource=pods or proxy, name=<all nodes>" in text
    finally:
        for kind in ("clusterrolebindings", "clusterroles"):
            await _delete(k, f"/apis/rbac.authorization.k8s.io/v1/{kind}/{role}")
        await _delete(k, f"/api/v1/namespaces/{namespace}")


async def test_kubectl_logs_reaches_the_backend_through_the_api_server(
    kubelet: Kubelet, local_cluster: cluster.Cluster, api: client.ApiClient
) -> None:
    k = kube.Kube(api)
    suffix = uuid.uuid4().hex[:6]
    namespace, node = f"kubelet-e2e-{suffix}", f"fargate-ip-127-0-0-1-{suffix}"
    port = int(kubelet.url.rsplit(":", 1)[1])
    await k.create(
        "/api/v1/nodes",
        {
            "metadata": {"name": node, "labels": {"type": "virtual-kubelet"}},
            "spec": {
                "taints": [
                    {
                        "key": "virtual-kubelet.io/provider",
                        "value": "fargate",
                        "effect": "NoSchedule",
                    }
                ]
            },
        },
    )
    try:
        status = {
            "addresses": [
                {"type": "Hostname", "address": "127.0.0.1"},
                {"type": "InternalIP", "address": "127.0.0.1"},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "declaredFeatures": ["ExtendWebSocketsToKubelet"],
        }
        await k.patch(f"/api/v1/nodes/{node}/status", {"status": status})
        await k.create("/api/v1/namespaces", {"metadata": {"name": namespace}})

        async def default_sa() -> kube.JSON | None:
            try:
                return await k.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
            except errors.KubeError as exc:
                if exc.not_found:
                    return None
                raise

        await waiting.until(default_sa, what="the default ServiceAccount")
        pod = await k.create(
            f"/api/v1/namespaces/{namespace}/pods", _pod(namespace, "logs-demo", node)
        )
        kubelet.backend.serve(pod, node)

        # The API server's pods/log, as client libraries call it.
        response = await k.raw(
            f"/api/v1/namespaces/{namespace}/pods/logs-demo/log", container="app"
        )
        async with response:
            assert await response.read() == b"".join(LINES)

        # A follow through the API server: each chunk is passed on as it is written, and
        # the API server hanging up on the kubelet (its client left) ends the stream.
        kubelet.backend.closed.clear()
        response = await asyncio.wait_for(
            k.raw(f"/api/v1/namespaces/{namespace}/pods/logs-demo/log", follow=True), 10
        )
        async with response:
            for chunk in (b"live 1\n", b"live 2\n"):
                kubelet.backend.feed.put_nowait(chunk)
                assert await asyncio.wait_for(response.content.readexactly(len(chunk)), 60) == chunk
        await asyncio.wait_for(kubelet.backend.closed.wait(), timeout=60)

        # kubectl itself (in a subprocess: this event loop is also serving the kubelet).
        code, out, err = await kubectl.run_async(
            local_cluster.kubeconfig,
            *("-n", namespace, "logs", "logs-demo", "-c", "setup"),
            *("--tail=2", "--timestamps", "--limit-bytes=1000"),
        )
        assert code == 0, err
        assert out == b"".join(LINES)
        assert kubelet.backend.requests[-1] == (
            "logs-demo",
            "setup",
            server.LogOptions(tail_lines=2, timestamps=True, limit_bytes=1000),
        )

        # kubectl exec reaches the kubelet too: its WebSocket, passed on by the API
        # server, is bridged to the backend's session; the exit code comes back.
        exec_ = ("-n", namespace, "exec", "logs-demo", "-c", "app")
        code, out, err = await kubectl.run_async(
            local_cluster.kubeconfig, *exec_, "-i", "--", "cat", stdin=b"x" * 100_000
        )
        assert (code, out, err) == (0, b"x" * 100_000, "")
        assert kubelet.backend.execs[-1].closed.is_set()
        code, _, err = await kubectl.run_async(local_cluster.kubeconfig, *exec_, "--", "exit", "3")
        assert code == 3, err
        assert "command terminated with exit code 3" in err
        code, _, err = await kubectl.run_async(local_cluster.kubeconfig, *exec_, "--", "nosuch")
        assert code != 0
        assert 'error executing command in container: exec: "nosuch": not found' in err

        # kubectl port-forward: SPDY inside the WebSocket, one port session per
        # connection (the backend's is an echo server).
        running = {"status": {"phase": "Running"}}  # kubectl forwards only to a running pod
        await k.patch(f"/api/v1/namespaces/{namespace}/pods/logs-demo/status", running)
        local = processes.free_ports(1)[0]
        forward = await asyncio.create_subprocess_exec(
            str(binaries.kubectl_path()), "--kubeconfig", str(local_cluster.kubeconfig),
            "-n", namespace, "port-forward", "pod/logs-demo", f"{local}:7777",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert forward.stdout is not None
            line = await asyncio.wait_for(forward.stdout.readline(), 30)
            if not line:
                assert forward.stderr is not None
                raise AssertionError((await forward.stderr.read()).decode())
            assert f"127.0.0.1:{local} -> 7777" in line.decode()
            for text in (b"first connection", b"second connection"):
                reader, writer = await asyncio.open_connection("127.0.0.1", local)
                writer.write(text)
                writer.write_eof()
                assert await asyncio.wait_for(reader.read(), 30) == text
                writer.close()
            assert kubelet.backend.ports[-2:] == [7777, 7777]
        finally:
            forward.terminate()
            await forward.wait()
    finally:
        # Grace 0: no kubelet will confirm the pod stopped, so it goes at once.
        await _delete(k, f"/api/v1/namespaces/{namespace}/pods/logs-demo", grace=0)
        await _delete(k, f"/api/v1/namespaces/{namespace}")
        await _delete(k, f"/api/v1/nodes/{node}")
