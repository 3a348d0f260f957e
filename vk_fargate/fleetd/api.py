"""The fleet API over HTTP (aiohttp): routes, bearer-token auth, and one mapping from
errors to status codes.

Bad input never reaches a 500: a body that is not JSON is a 400, a spec that breaks a
rule a 422 naming the field, both with the uniform ``{"fault_message", "code"}``. An
unexpected exception is logged and answered 500 ``Internal`` without crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hmac
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import pydantic
from aiohttp import web

from vk_fargate import errors
from vk_fargate.fleet import models
from vk_fargate.fleetd import attachapi, daemon, logs, sandbox, sessions

log = logging.getLogger(__name__)
FLEET: web.AppKey[daemon.Fleet] = web.AppKey("fleet", daemon.Fleet)
TOKEN: web.AppKey[str] = web.AppKey("token", str)
HEARTBEAT_SECONDS = 5.0
# A cluster's whole Service table is one body: thousands of ports with their endpoints.
TABLE_BYTES = 64 * 2**20
# The error of a refused WebSocket upgrade, in headers (the message percent-encoded).
ERROR_CODE, ERROR_MESSAGE = "X-Fleet-Error-Code", "X-Fleet-Error-Message"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(exc: errors.FleetError, *, upgrade: bool = False) -> web.Response:
    body = models.Error(fault_message=exc.message, code=exc.code, field=exc.field)
    headers = {}
    if isinstance(exc, errors.InsufficientCapacity):
        headers["Retry-After"] = str(int(exc.retry_after))
    if upgrade:  # a WebSocket client sees the status and headers, not the body
        headers[ERROR_CODE] = exc.code
        headers[ERROR_MESSAGE] = urllib.parse.quote(exc.message[:2000])
    return web.json_response(body.model_dump(exclude_none=True), status=exc.status, headers=headers)


def _invalid(exc: pydantic.ValidationError) -> errors.InvalidSpec:
    field = ".".join(str(p) for p in exc.errors()[0]["loc"]) or None
    return errors.InvalidSpec(models.invalid(exc), field=field)


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path != "/healthz" and not _authorized(request):
            raise errors.Unauthorized("a valid bearer token is required")
        return await handler(request)
    except errors.FleetError as exc:
        return _error(exc, upgrade=request.headers.get("Upgrade", "").lower() == "websocket")
    except web.HTTPException:
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return _error(errors.FleetError("internal error; see the fleet daemon's log"))


def _authorized(request: web.Request) -> bool:
    """Whether the request carries the token: ``Bearer`` in any case (RFC 9110 schemes
    are case-insensitive); a header that is not UTF-8 is simply not the token."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = request.app[TOKEN].encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), expected
    )


async def _json(request: web.Request, *, limit: int | None = None) -> Any:
    """The body as JSON; 400 for what is not, including nesting deeper than the parser's
    recursion limit and integers longer than Python's 4300 digits. ``limit``: bytes
    allowed beyond aiohttp's 1 MiB (a 400 past them)."""
    try:
        if limit is None:
            return await request.json()
        return json.loads(await _body(request, limit))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise errors.BadRequest(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise errors.BadRequest("the body is not valid JSON: nested too deeply") from exc


async def _body(request: web.Request, limit: int) -> bytes:
    if (request.content_length or 0) > limit:
        raise errors.BadRequest(f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    while chunk := await request.content.read(2**16):
        size += len(chunk)
        if size > limit:
            raise errors.BadRequest(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _int(request: web.Request, name: str, *, minimum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise errors.BadRequest(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise errors.BadRequest(f"{name} must be at least {minimum}")
    return value


def _bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise errors.BadRequest(f"{name} must be true or false, not {raw!r}")
    return raw in ("true", "1")


def _vm_id(request: web.Request) -> str:
    vm_id = request.match_info["microvm_id"]
    try:
        pydantic.TypeAdapter(models.MicroVMId).validate_python(vm_id)
    except pydantic.ValidationError:
        raise errors.BadRequest(f"{vm_id!r} is not a valid microVM id") from None
    return vm_id


def _cluster(request: web.Request) -> str:
    cluster = request.match_info["cluster"]
    try:
        pydantic.TypeAdapter(models.MicroVMId).validate_python(cluster)
    except pydantic.ValidationError:
        raise errors.BadRequest(f"{cluster!r} is not a valid cluster name") from None
    return cluster


def _dump(model: pydantic.BaseModel, status: int = 200) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status)


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def list_hosts(request: web.Request) -> web.Response:
    return _dump(models.HostList(items=request.app[FLEET].host_models()))


async def host_action(request: web.Request) -> web.Response:
    try:
        action = models.HostAction.model_validate(await _json(request), strict=True)
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from exc
    return _dump(await request.app[FLEET].host_action(request.match_info["host_id"], action))


async def list_microvms(request: web.Request) -> web.Response:
    selector: dict[str, str] = {}
    for term in filter(None, request.query.get("label_selector", "").split(",")):
        key, sep, value = term.partition("=")
        if not sep or not key:
            raise errors.BadRequest(f"label_selector terms are key=value, not {term!r}")
        selector[key.strip()] = value.strip()
    return _dump(request.app[FLEET].select(selector))


async def put_microvm(request: web.Request) -> web.Response:
    vm_id = _vm_id(request)
    try:
        spec = models.MicroVMSpec.model_validate(await _json(request), strict=True)
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from exc
    vm, created = await request.app[FLEET].put(vm_id, spec)
    return _dump(vm, 201 if created else 200)


async def put_volume(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    vm_id = _vm_id(request)
    fleet.get(vm_id)  # 404 before looking at the body
    try:
        files = models.FileSet.model_validate(await _json(request), strict=True)
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from exc
    await fleet.put_volume(vm_id, request.match_info["volume"], files)
    return web.Response(status=204)


async def put_services(request: web.Request) -> web.Response:
    cluster = _cluster(request)
    try:
        body = await _json(request, limit=TABLE_BYTES)
        table = models.ServiceTable.model_validate(body, strict=True)
    except pydantic.ValidationError as exc:
        raise _invalid(exc) from exc
    return _dump(await request.app[FLEET].put_services(cluster, table))


async def get_services(request: web.Request) -> web.Response:
    return _dump(request.app[FLEET].get_services(_cluster(request)))


async def get_microvm(request: web.Request) -> web.Response:
    return _dump(request.app[FLEET].get(_vm_id(request)))


async def delete_microvm(request: web.Request) -> web.Response:
    grace = _int(request, "grace_seconds", minimum=0)
    if grace is not None and grace > 3600:
        raise errors.BadRequest("grace_seconds must be at most 3600")
    return _dump(await request.app[FLEET].delete(_vm_id(request), grace=grace), 202)


async def microvm_stats(request: web.Request) -> web.Response:
    return _dump(request.app[FLEET].stats(_vm_id(request)))


async def container_logs(request: web.Request) -> web.StreamResponse:
    fleet = request.app[FLEET]
    vm_id = _vm_id(request)
    vm = fleet.get(vm_id)
    name = request.match_info["container"]
    statuses = {c.name: c for c in [*vm.status.init_containers, *vm.status.containers]}
    spec_names = {c.name for c in [*vm.spec.init_containers, *vm.spec.containers]}
    if name not in spec_names:
        raise errors.NotFound(f"container {name} is not in microVM {vm_id}")
    since = _since(request)
    options = logs.Options(
        follow=_bool(request, "follow"),
        tail_lines=_int(request, "tail_lines", minimum=0),
        since=since,
        timestamps=_bool(request, "timestamps"),
        limit_bytes=_int(request, "limit_bytes", minimum=1),
    )
    status = statuses.get(name)
    instance = status.restart_count if status else 0
    if _bool(request, "previous"):
        if instance == 0:
            raise errors.BadRequest(f"previous terminated container {name} not found")
        instance -= 1
    record = fleet.vms[vm_id]
    path = sandbox.log_path(record.dir, name, instance)

    def active() -> bool:
        if request.transport is None or request.transport.is_closing():
            return False  # the client went away: stop following (and free the handler)
        current = fleet.vms.get(vm_id)
        if current is None:
            return False
        now = {
            c.name: c for c in [*current.vm.status.init_containers, *current.vm.status.containers]
        }
        c = now.get(name)
        return bool(
            c
            and c.restart_count == instance
            and c.state != "terminated"
            and current.holds_resources
        )

    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the client went away: not an error
        async for chunk in logs.stream(path, options, active=active):
            await response.write(chunk)
        await response.write_eof()
    return response


def _since(request: web.Request) -> datetime.datetime | None:
    seconds = _int(request, "since_seconds", minimum=1)
    raw = request.query.get("since_time")
    if seconds is not None and raw is not None:
        raise errors.BadRequest("since_seconds and since_time cannot be used together")
    if seconds is not None:
        return models.now() - datetime.timedelta(seconds=seconds)
    if raw is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise errors.BadRequest(f"since_time must be RFC 3339, not {raw!r}") from None
    if moment.tzinfo is None:
        raise errors.BadRequest("since_time needs a time zone")
    return moment


async def watch_events(request: web.Request) -> web.StreamResponse:
    bus = request.app[FLEET].bus
    since = _int(request, "since", minimum=0)
    cursor = bus.cursor if since is None else since
    bus.check(cursor)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # a client ends a stream by leaving
        while True:
            found = await bus.after(cursor, timeout=HEARTBEAT_SECONDS)
            if not found:
                beat = {"type": "heartbeat", "cursor": cursor, "time": models.now().isoformat()}
                await response.write(json.dumps(beat).encode() + b"\n")
                continue
            await response.write(b"".join(json.dumps(e).encode() + b"\n" for e in found))
            cursor = found[-1]["cursor"]
    return response


async def exec_stream(request: web.Request) -> web.StreamResponse:
    """A command in a container over a WebSocket (``streams``)."""
    fleet = request.app[FLEET]
    vm_id = _vm_id(request)
    command = request.query.getall("command", [])
    if not command:
        raise errors.BadRequest("command is required: give it as command=... parameters")
    stdin, tty = _bool(request, "stdin"), _bool(request, "tty")
    container = request.match_info["container"]
    return await sessions.serve(
        request,
        vm_id,
        fleet,
        lambda: fleet.open_exec(vm_id, container, command, stdin=stdin, tty=tty),
    )


async def port_stream(request: web.Request) -> web.StreamResponse:
    """A TCP stream to a port of the pod over a WebSocket (``streams``)."""
    fleet = request.app[FLEET]
    vm_id = _vm_id(request)
    raw = request.match_info["port"]
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise errors.BadRequest(f"port must be a number from 1 to 65535, not {raw!r}")
    return await sessions.serve(request, vm_id, fleet, lambda: fleet.open_port(vm_id, int(raw)))


async def openapi(_: web.Request) -> web.Response:
    text = resources.files("vk_fargate.fleet").joinpath("openapi.yaml").read_text()
    return web.Response(text=text, content_type="application/yaml")


def application(fleet: daemon.Fleet, token: str) -> web.Application:
    app = web.Application(middlewares=[_errors_and_auth])
    app[FLEET] = fleet
    app[TOKEN] = token
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/openapi.yaml", openapi)
    app.router.add_get("/v1/hosts", list_hosts)
    app.router.add_put("/v1/hosts/{host_id}/actions", host_action)
    app.router.add_get("/v1/microvms", list_microvms)
    app.router.add_put("/v1/microvms/{microvm_id}", put_microvm)
    app.router.add_get("/v1/microvms/{microvm_id}", get_microvm)
    app.router.add_delete("/v1/microvms/{microvm_id}", delete_microvm)
    app.router.add_get("/v1/microvms/{microvm_id}/stats", microvm_stats)
    app.router.add_put("/v1/microvms/{microvm_id}/volumes/{volume}", put_volume)
    app.router.add_get("/v1/microvms/{microvm_id}/containers/{container}/logs", container_logs)
    app.router.add_get("/v1/microvms/{microvm_id}/containers/{container}/exec", exec_stream)
    app.router.add_get("/v1/microvms/{microvm_id}/ports/{port}", port_stream)
    app.router.add_put("/v1/clusters/{cluster}/services", put_services)
    app.router.add_get("/v1/clusters/{cluster}/services", get_services)
    app.router.add_get("/v1/events", watch_events)
    attachapi.register(app)
    return app
