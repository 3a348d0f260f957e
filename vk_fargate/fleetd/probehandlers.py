"""The probe handlers the shim runs, as the kubelet's probers (``pkg/probe``) do, with
their verdicts and Go's texts: ``exec`` inside the container with ``runc exec`` (exit 0
passes, else its output is the message; one that outlives its timeout is killed
there), ``httpGet`` (a GET with the kubelet's User-Agent; 2xx and 3xx pass; a redirect
is followed only to the same host; HTTPS is not verified, as the kubelet's) and
``tcpSocket`` (a connect). Standard library only: this module runs inside every shim.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
import urllib.parse
from pathlib import Path

USER_AGENT = "kube-probe/1.36"
MAX_OUTPUT = 10 * 1024  # the kubelet keeps this much of a probe's output
MAX_REDIRECTS = 10  # Go's http.Client


def _go_error(exc: BaseException) -> str:
    """A connect error as Go words it: ``connect: connection refused``, ``i/o timeout``."""
    if isinstance(exc, TimeoutError):
        return "i/o timeout"
    if isinstance(exc, OSError) and exc.errno:  # asyncio's own strerror names the address
        text = os.strerror(exc.errno)
        return f"connect: {text[:1].lower()}{text[1:]}"
    return str(exc) or type(exc).__name__


async def tcp_probe(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return False, f"dial tcp {_hostport(host, port)}: {_go_error(exc)}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def http_probe(
    scheme: str,
    host: str,
    port: int,
    path: str,
    headers: list[tuple[str, str]],
    timeout: float,
) -> tuple[bool, str]:
    """A GET as the kubelet's HTTP prober sends it, redirects within the host followed."""
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{_hostport(host, port)}{path}"
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                code, location = await _get(url, headers)
        except TimeoutError:
            return False, (
                f'Get "{url}": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)"
            )
        except OSError as exc:
            parsed = urllib.parse.urlsplit(url)
            where = _hostport(parsed.hostname or host, parsed.port or port)
            return False, f'Get "{url}": dial tcp {where}: {_go_error(exc)}'
        if 300 <= code < 400 and location:
            target = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(target).hostname != urllib.parse.urlsplit(url).hostname:
                return True, ""  # not followed: the redirect itself passes, as the kubelet's
            url = target
            continue
        if 200 <= code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {code}"
    return False, f'Get "{url}": stopped after {MAX_REDIRECTS} redirects'


async def _get(url: str, headers: list[tuple[str, str]]) -> tuple[int, str | None]:
    """The status code and Location of a GET of ``url`` (HTTP/1.1; the body is not read,
    so a server slow to send or close it does not fail the probe)."""
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    context = None
    if https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the kubelet's prober does not verify either
    port = parts.port or (443 if https else 80)
    host = parts.hostname or ""
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        names = {name.lower() for name, _ in headers}
        lines = [f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {parts.netloc}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        if "accept" not in names:
            lines.append("Accept: */*")
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status = (await reader.readline()).decode("latin-1").split()
        if len(status) < 2 or not status[1].isdigit():
            raise OSError(0, "malformed HTTP response")
        location = None
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "location":
                location = value.strip()
        return int(status[1]), location  # the body says nothing the verdict needs
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def exec_probe(
    prefix: list[str], command: list[str], timeout: float, pid_file: Path
) -> tuple[bool, str]:
    """Run ``command`` in the container (``prefix``: ``runc exec``, its options and the
    container's id). One that outlives ``timeout`` is killed inside the container (its
    PID from runc's ``--pid-file``), not only runc, so no probe piles up in there."""
    pid_file.unlink(missing_ok=True)
    *options, container = prefix
    proc = await asyncio.create_subprocess_exec(
        *options,
        "--pid-file",
        str(pid_file),
        container,
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        # runc has not reaped it yet (it waits for it), so the PID is still that process.
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False, f'command "{" ".join(command)}" timed out'
    text = out[:MAX_OUTPUT].decode(errors="replace")
    return proc.returncode == 0, text
