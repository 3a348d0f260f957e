"""The kubelet API's streaming paths: ``/exec`` and ``/attach`` (``remotecommand``),
``/portForward`` (``portforward``) and the old ``/run`` (a command's output as a body).

Each checks who asks and which pod, as every kubelet path does (``nodes/proxy`` by
SubjectAccessReview; a pod not ours or a UID in the path not the pod's is a 404), then
answers plain HTTP errors before the upgrade: a bad query, a client that is not a
WebSocket with the right protocol, a session bound reached (429), or what the fleet
refuses (an unknown or stopped container). Only then is the WebSocket accepted and the
session run until either side ends it.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from vk_fargate import errors
from vk_fargate.fleet import backend as fleet_backend
from vk_fargate.k8s import kube
from vk_fargate.kubelet import auth, portforward, remotecommand, sessions

JSON = kube.JSON
PATHS = {
    "exec": ("/exec/{namespace}/{pod}/{container}", "/exec/{namespace}/{pod}/{uid}/{container}"),
    "attach": (
        "/attach/{namespace}/{pod}/{container}",
        "/attach/{namespace}/{pod}/{uid}/{container}",
    ),
    "portForward": ("/portForward/{namespace}/{pod}", "/portForward/{namespace}/{pod}/{uid}"),
    "run": ("/run/{namespace}/{pod}/{container}", "/run/{namespace}/{pod}/{uid}/{container}"),
}


class Pods(Protocol):
    """What the streaming paths need of the provider (``server.Backend``'s part)."""

    def pod(self, namespace: str, name: str) -> tuple[JSON, str] | None: ...

    async def open_exec(
        self, pod: JSON, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> fleet_backend.Stream: ...

    async def open_attach(
        self, pod: JSON, container: str, *, stdin: bool, tty: bool
    ) -> fleet_backend.Stream: ...

    async def open_port(self, pod: JSON, port: int) -> fleet_backend.Stream: ...


class Server(Protocol):
    """The kubelet server, read as each request comes (its bounds may be replaced)."""

    @property
    def backend(self) -> Pods: ...

    @property
    def guard(self) -> auth.Guard: ...

    @property
    def streams(self) -> sessions.Sessions: ...

    @property
    def stream_idle_timeout(self) -> float: ...


def container_names(pod: JSON) -> set[str]:
    spec = pod.get("spec") or {}
    kinds = ("containers", "initContainers", "ephemeralContainers")
    return {str(c.get("name")) for kind in kinds for c in spec.get(kind) or ()}


class Routes:
    """The handlers of ``server``'s streaming paths."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def add_to(self, router: web.UrlDispatcher) -> None:
        handlers = {
            "exec": self.exec,
            "attach": self.attach,
            "portForward": self.port_forward,
            "run": self.run,
        }
        for name, paths in PATHS.items():
            for path in paths:
                router.add_route("*", path, handlers[name])

    async def exec(self, request: web.Request) -> web.StreamResponse:
        """``kubectl exec``: checks, the fleet session, then the WebSocket bridged to it."""
        return await self._remote_command(request, "exec")

    async def attach(self, request: web.Request) -> web.StreamResponse:
        """``kubectl attach``: as ``exec``, to the container's own process; the
        container's ``tty`` decides, as the kubelet takes it from the pod spec."""
        return await self._remote_command(request, "attach")

    async def run(self, request: web.Request) -> web.StreamResponse:
        """The old ``/run``: ``cmd`` split at spaces, run, its output the body (a 500
        with the reason when it could not run), as the kubelet's ``getRun``."""
        pod, container = await self._container(request)
        command = request.query.get("cmd", "").split(" ")
        with self.server.streams.hold(pod["metadata"]["uid"], "exec", f"run in {container}"):
            stream = await self.server.backend.open_exec(
                pod, container, command, stdin=False, tty=False
            )
            output = b""
            try:
                while (message := await stream.receive()) is not None:
                    if message[:1] in (b"\x01", b"\x02"):
                        output += message[1:]
                    elif message[:1] == bytes((remotecommand.ERROR,)):
                        status = remotecommand.status(message[1:], tuple(command))
                        if status["status"] != "Success":
                            return web.Response(status=500, text=status["message"])
                        break
            finally:
                await stream.close()
        return web.Response(body=output, content_type="application/json")

    async def _remote_command(self, request: web.Request, kind: str) -> web.StreamResponse:
        pod, container = await self._container(request)
        options = remotecommand.parse_options(request.query, attach=kind == "attach")
        if not remotecommand.wants_websocket(request, remotecommand.PROTOCOL):
            raise errors.BadRequest(
                f"{kind} is served over a WebSocket with the {remotecommand.PROTOCOL} "
                "protocol (kubectl 1.30 or newer, through an API server that proxies "
                "WebSockets to the kubelet); SPDY is not served"
            )
        meta = pod["metadata"]
        what = f"{kind} {'in' if kind == 'exec' else 'to'} {meta['namespace']}/{meta['name']}"
        what += f"/{container}"
        backend = self.server.backend
        with self.server.streams.hold(meta["uid"], kind, what) as count:
            if kind == "exec":
                stream = await backend.open_exec(
                    pod, container, list(options.command), stdin=options.stdin, tty=options.tty
                )
            else:
                stream = await backend.open_attach(
                    pod, container, stdin=options.stdin, tty=options.tty
                )
            try:
                ws = web.WebSocketResponse(
                    protocols=(remotecommand.PROTOCOL,), max_msg_size=remotecommand.MAX_MESSAGE
                )
                await ws.prepare(request)
            except BaseException:
                await stream.close()
                raise
            await remotecommand.bridge(
                ws,
                stream,
                command=options.command,
                idle_timeout=self.server.stream_idle_timeout,
                count=count,
                what=what,
            )
            return ws

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        """``kubectl port-forward``: SPDY/3.1 inside the WebSocket, each forwarded
        connection a fleet port session into the pod's network namespace."""
        pod = await self._pod(request)
        if not remotecommand.wants_websocket(request, portforward.SUBPROTOCOL):
            raise errors.BadRequest(
                f"port-forward is served over a WebSocket with the {portforward.SUBPROTOCOL} "
                "protocol (kubectl 1.31 or newer, through an API server that proxies "
                "WebSockets to the kubelet); SPDY upgrades are not served"
            )
        meta = pod["metadata"]
        what = f"port-forward to {meta['namespace']}/{meta['name']}"
        with self.server.streams.hold(meta["uid"], "portforward", what) as count:
            ws = web.WebSocketResponse(protocols=(portforward.SUBPROTOCOL,))
            await ws.prepare(request)
            activity = remotecommand.Activity()

            async def open_port(port: int) -> portforward.Session:
                stream = await self.server.backend.open_port(pod, port)
                return remotecommand.PortSession(stream, activity, count)

            await remotecommand.until_idle(
                portforward.serve(ws, open_port, what=meta["uid"]),
                activity,
                self.server.stream_idle_timeout,
                ws,
                what,
            )
            return ws

    async def _container(self, request: web.Request) -> tuple[JSON, str]:
        """The pod and the container a request names (404 for one not in the pod)."""
        pod = await self._pod(request)
        container = request.match_info["container"]
        if container not in container_names(pod):
            meta = pod["metadata"]
            raise errors.NotFound(
                f'container "{container}" not found in pod "{meta["namespace"]}/{meta["name"]}"'
            )
        return pod, container

    async def _pod(self, request: web.Request) -> JSON:
        """The pod a streaming request names, once the caller may reach it (a 404 when
        it is not ours, or when its UID in the path is not the pod's)."""
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        found = self.server.backend.pod(namespace, name)
        node = found[1] if found is not None else ""
        await self.server.guard.authorize(
            request[auth.IDENTITY], node=node, path=request.path, method=request.method
        )
        uid = request.match_info.get("uid")
        if found is None or (uid and found[0]["metadata"]["uid"] != uid):
            raise errors.NotFound(f'pod "{namespace}/{name}" does not exist')
        return found[0]
