"""An async client of the fleet API (aiohttp), with retries where they are safe.

Every call is idempotent by the API's design (client-chosen ids, PUT, DELETE), so
connection errors and 5xx answers are retried with jittered exponential back-off,
never sooner than a ``Retry-After``. ``InsufficientCapacity`` is not retried here:
the caller decides (the scheduler reports it on the pod and tries again later).
Errors come back as the typed ``errors.FleetError`` subclasses. An https:// fleet is
verified against the system's CAs, or only those of a CA bundle (``trusting``); a
certificate that does not verify is a plain ``FleetError``, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pydantic

from vk_fargate import errors, metrics, supervision
from vk_fargate.fleet import models

# A stream that sent nothing (not even a heartbeat, every 5 s) for this long is dead.
EVENT_READ_TIMEOUT = 20.0
# Seconds between reconnects of a broken event stream (doubling, jittered).
RECONNECT_MIN, RECONNECT_MAX = 0.2, 5.0
# The fleet's streaming subprotocol (``fleetd.streams``) and its refused upgrades' headers.
SUBPROTOCOL = "v5.channel.k8s.io"
ERROR_CODE, ERROR_MESSAGE = "X-Fleet-Error-Code", "X-Fleet-Error-Message"
# Seconds between the tries of a call (doubling, full jitter), never under a Retry-After.
RETRY_MIN, RETRY_MAX = 0.2, 5.0


def trusting(ca_file: Path) -> ssl.SSLContext:
    """A client context trusting only the CAs in ``ca_file`` (PEM) for the fleet."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except OSError as exc:  # ssl.SSLError included: no certificate in the file
        raise errors.ConfigError(f"cannot load the fleet CA bundle {ca_file}: {exc}") from exc


class FleetClient:
    """One fleet endpoint and token; ``close`` when done."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        attempts: int = 6,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context else True, limit=64)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), json_serialize=_dumps
        )
        # Exec, attach and port streams: connections of their own, unpooled (each holds
        # one for as long as it lasts: in the calls' pool, 64 open sessions would stall
        # every call), with no total timeout. Their number is bounded by whoever opens them.
        self._streams = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context else True, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        self._attempts = attempts

    async def close(self) -> None:
        await self._streams.close()
        await self._session.close()

    async def __aenter__(self) -> FleetClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # calls

    async def hosts(self) -> list[models.Host]:
        return models.HostList.model_validate(await self._call("GET", "/v1/hosts")).items

    async def host_action(self, host_id: str, action: models.HostAction) -> models.Host:
        body = action.model_dump(mode="json")
        return models.Host.model_validate(
            await self._call("PUT", f"/v1/hosts/{host_id}/actions", json_body=body)
        )

    async def put_microvm(self, vm_id: str, spec: models.MicroVMSpec) -> models.MicroVM:
        body = spec.model_dump(mode="json", exclude_defaults=False)
        return models.MicroVM.model_validate(
            await self._call("PUT", f"/v1/microvms/{vm_id}", json_body=body)
        )

    async def update_microvm(self, vm_id: str, spec: models.MicroVMSpec) -> models.MicroVM:
        """The same PUT: the fleet restarts a container whose image changed in place."""
        return await self.put_microvm(vm_id, spec)

    async def put_volume(self, vm_id: str, volume: str, files: models.FileSet) -> None:
        """The atomic swap of a files volume's content (204, no body)."""
        body = files.model_dump(mode="json")
        await self._call("PUT", f"/v1/microvms/{vm_id}/volumes/{volume}", json_body=body)

    async def put_services(self, cluster: str, table: models.ServiceTable) -> models.ServiceTable:
        body = table.model_dump(mode="json")
        return models.ServiceTable.model_validate(
            await self._call("PUT", f"/v1/clusters/{cluster}/services", json_body=body)
        )

    async def get_microvm(self, vm_id: str) -> models.MicroVM:
        return models.MicroVM.model_validate(await self._call("GET", f"/v1/microvms/{vm_id}"))

    async def microvm_stats(self, vm_id: str) -> models.MicroVMStats:
        """CPU and memory of a running microVM now; Conflict when it has none."""
        return models.MicroVMStats.model_validate(
            await self._call("GET", f"/v1/microvms/{vm_id}/stats")
        )

    async def list_microvms(self, labels: Mapping[str, str] | None = None) -> models.MicroVMList:
        params = {}
        if labels:
            params["label_selector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        return models.MicroVMList.model_validate(
            await self._call("GET", "/v1/microvms", params=params)
        )

    async def delete_microvm(
        self, vm_id: str, *, grace_seconds: int | None = None
    ) -> models.MicroVM:
        params = {} if grace_seconds is None else {"grace_seconds": str(grace_seconds)}
        return models.MicroVM.model_validate(
            await self._call("DELETE", f"/v1/microvms/{vm_id}", params=params)
        )

    async def logs(self, vm_id: str, container: str, **options: Any) -> AsyncIterator[bytes]:
        """The container's log as it comes; options as the API's query (snake_case)."""
        params = {
            k: (str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in options.items()
            if v is not None
        }
        url = f"{self.base_url}/v1/microvms/{vm_id}/containers/{container}/logs"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        try:
            async with self._session.get(
                url, params=params, headers=self._headers, timeout=timeout
            ) as response:
                await _raise_for(response)
                async for chunk in response.content.iter_any():
                    yield chunk
        except aiohttp.ClientError as exc:
            raise _failed("fleet logs stream failed", exc) from exc

    async def open_exec(
        self, vm_id: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> WebSocketStream:
        """``command`` in the container (``backend.MicroVMs.open_exec``)."""
        return WebSocketStream(
            await self._connect(*_exec_route(vm_id, container, command, stdin, tty))
        )

    async def open_attach(
        self, vm_id: str, container: str, *, stdin: bool, tty: bool
    ) -> WebSocketStream:
        """The running container's own stdio, over the fleet's attach WebSocket."""
        params = [("stdin", str(stdin).lower()), ("tty", str(tty).lower())]
        path = f"/v1/microvms/{vm_id}/containers/{container}/attach"
        return WebSocketStream(await self._connect(path, params))

    async def open_port(self, vm_id: str, port: int) -> WebSocketStream:
        """A TCP stream to ``port`` in the microVM (``backend.MicroVMs.open_port``)."""
        return WebSocketStream(await self._connect(f"/v1/microvms/{vm_id}/ports/{port}", []))

    def exec(
        self, vm_id: str, container: str, command: list[str], *, stdin: bool, tty: bool
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientWebSocketResponse]:
        """A WebSocket running ``command`` in ``container`` (v5 channels, see the API's
        exec): STDIN/RESIZE/CLOSE to send, STDOUT/STDERR and the last ERROR to read.
        Refusals raise the typed errors (NotFound, Conflict, TooManySessions, ...)."""
        return self._stream(*_exec_route(vm_id, container, command, stdin, tty))

    def port(
        self, vm_id: str, port: int
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientWebSocketResponse]:
        """A WebSocket carrying one TCP connection to ``port`` inside the microVM."""
        return self._stream(f"/v1/microvms/{vm_id}/ports/{port}", [])

    @contextlib.asynccontextmanager
    async def _stream(
        self, path: str, params: list[tuple[str, str]]
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        ws = await self._connect(path, params)
        try:
            yield ws
        finally:
            await ws.close()

    async def _connect(
        self, path: str, params: list[tuple[str, str]]
    ) -> aiohttp.ClientWebSocketResponse:
        """A streaming session's WebSocket (not retried: opening one has effects)."""
        try:
            return await self._streams.ws_connect(
                self.base_url + path,
                params=params,
                headers=self._headers,
                protocols=(SUBPROTOCOL,),
                heartbeat=30.0,  # a dead peer is noticed; the stream itself never times out
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                max_msg_size=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise _refused(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failed(f"GET {path}", exc) from exc

    async def events(self, since: int) -> AsyncIterator[models.Event]:
        """Every event after ``since``, forever, reconnecting from the last cursor seen.

        Heartbeats are not yielded. A pruned cursor raises CursorExpired: list again.
        """
        cursor = since
        backoff = supervision.Backoff(RECONNECT_MIN, RECONNECT_MAX)
        while True:
            try:
                async for event in self._event_stream(cursor):
                    cursor = event.cursor
                    backoff.reset()
                    if event.type != "heartbeat":
                        yield event
            except errors.FleetUnavailable:
                await backoff.sleep()

    async def _event_stream(self, since: int) -> AsyncIterator[models.Event]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=EVENT_READ_TIMEOUT)
        try:
            async with self._session.get(
                f"{self.base_url}/v1/events",
                params={"since": str(since)},
                headers=self._headers,
                timeout=timeout,
            ) as response:
                await _raise_for(response)
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            # pydantic's own parser: faster than orjson, then validating
                            yield models.Event.model_validate_json(line)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failed("fleet event stream broke", exc) from exc
        raise errors.FleetUnavailable("fleet event stream ended")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        call = f"{method} {_route(path)}"
        backoff = supervision.Backoff(RETRY_MIN, RETRY_MAX, jitter=1.0)  # this call's own
        while True:
            try:
                with metrics.Timer(call):
                    return await self._once(method, path, json_body=json_body, params=params)
            except errors.FleetUnavailable as exc:
                if backoff.failures + 1 >= self._attempts:
                    raise
                await asyncio.sleep(max(backoff.next(), exc.retry_after))

    async def _once(
        self, method: str, path: str, *, json_body: Any, params: Mapping[str, str] | None
    ) -> Any:
        try:
            async with self._session.request(
                method, self.base_url + path, json=json_body, params=params, headers=self._headers
            ) as response:
                await _raise_for(response)
                if response.status == 204:
                    return None
                return await response.json(loads=orjson.loads)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise _failed(f"{method} {path}", exc) from exc


def _dumps(body: Any) -> str:
    return orjson.dumps(body).decode()


def _exec_route(
    vm_id: str, container: str, command: list[str], stdin: bool, tty: bool
) -> tuple[str, list[tuple[str, str]]]:
    params = [("command", c) for c in command]
    params += [("stdin", _flag(stdin)), ("tty", _flag(tty))]
    return f"/v1/microvms/{vm_id}/containers/{container}/exec", params


class WebSocketStream:
    """A fleet streaming session (``backend.Stream``) over its WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, message: bytes) -> None:
        if not self._ws.closed:  # else the session ended meanwhile: ``receive`` says so
            with contextlib.suppress(ConnectionError):
                await self._ws.send_bytes(message)

    async def receive(self) -> bytes | None:
        message = await self._ws.receive()
        return message.data if message.type == aiohttp.WSMsgType.BINARY else None

    async def close(self) -> None:
        await self._ws.close()


def _failed(what: str, exc: Exception) -> errors.FleetError:
    """FleetUnavailable (retried) for a failed connection; a certificate this client does
    not trust is a FleetError of its own: retrying cannot fix it."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return errors.FleetError(
            f"{what}: the fleet's TLS certificate is not trusted ({exc.certificate_error}); "
            "give the CA that signed it (VK_FARGATE_FLEET_CA_FILE)"
        )
    return errors.FleetUnavailable(f"{what}: {exc!r}")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _refused(exc: aiohttp.WSServerHandshakeError) -> errors.FleetError:
    """The typed error of a refused upgrade, from its status and the fleet's headers."""
    headers = exc.headers
    code = headers.get(ERROR_CODE, "") if headers else ""
    told = headers.get(ERROR_MESSAGE, "") if headers else ""
    message = urllib.parse.unquote(told) or f"{exc.status} {exc.message}"
    kind = errors.FLEET_ERRORS.get(code)
    if kind is errors.InsufficientCapacity or (kind is None and exc.status >= 500):
        return errors.FleetUnavailable(f"{exc.status} {code or 'Unknown'}: {message}")
    if kind is not None:
        return kind(message)
    return errors.FleetError(f"{exc.status} {code or 'Unknown'}: {message}")


def _route(path: str) -> str:
    """A path with its ids replaced, as a low-cardinality metric label."""
    parts = path.split("/")
    if len(parts) > 3 and parts[2] in ("microvms", "hosts"):
        parts[3] = "{id}"
    if len(parts) > 5 and parts[4] == "volumes":
        parts[5] = "{volume}"
    return "/".join(parts)


async def _raise_for(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    text = await response.text()
    try:
        error = models.Error.model_validate_json(text)
    except pydantic.ValidationError:
        error = models.Error(fault_message=text[:500] or response.reason or "", code="Unknown")
    if error.code == "InsufficientCapacity":
        retry_after = float(response.headers.get("Retry-After", "5") or 5)
        raise errors.InsufficientCapacity(error.fault_message, retry_after=retry_after)
    kind = errors.FLEET_ERRORS.get(error.code)
    if kind is not None and response.status < 500:
        raise kind(error.fault_message, field=error.field)
    if response.status >= 500:
        raise errors.FleetUnavailable(
            f"{response.status} {error.code}: {error.fault_message}",
            retry_after=float(response.headers.get("Retry-After", "0") or 0),
        )
    raise errors.FleetError(f"{response.status} {error.code}: {error.fault_message}")
