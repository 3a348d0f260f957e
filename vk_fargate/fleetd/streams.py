"""The fleet API's streaming channel: a command run in a container, or a TCP stream to
a port in the pod's network namespace, carried over one WebSocket per session.

Both speak the Kubernetes remote-command v5 framing (``v5.channel.k8s.io``), so the
provider can hand ``kubectl exec``'s messages on without reframing them: every binary
message starts with a channel byte.

exec (``GET /v1/microvms/{id}/containers/{name}/exec``):
  - ``STDIN`` (0) client -> container: stdin bytes;
  - ``STDOUT`` (1), ``STDERR`` (2) container -> client (with a TTY, all output is on 1);
  - ``RESIZE`` (4) client -> container: JSON ``{"Width": w, "Height": h}``;
  - ``CLOSE`` (255) client -> container: ``[255, 0]`` ends stdin (EOF);
  - ``ERROR`` (3) container -> client, last: JSON ``{"exit_code": n}`` when the command
    ran, or ``{"error": "..."}`` when it could not start or was ended (the provider turns
    either into the ``metav1.Status`` the kubelet sends).

port (``GET /v1/microvms/{id}/ports/{port}``), one TCP connection per session:
  - ``STDIN`` (0) client -> pod and ``STDOUT`` (1) pod -> client: the connection's bytes;
  - ``CLOSE`` (255): ``[255, 0]`` the client is done writing (a half-close);
    ``[255, 1]`` the pod is done writing;
  - ``ERROR`` (3) pod side -> client: JSON ``{"error": "..."}`` when the connect fails.

The WebSocket closing ends the session, whichever side closes it. Standard library only:
the runtimes that implement ``Session`` run inside the shim too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Protocol

SUBPROTOCOL = "v5.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class Session(Protocol):
    """One exec or port session, as a runtime runs it.

    ``send`` takes what the client sent (STDIN data, RESIZE, CLOSE) and may wait for
    room (back-pressure) but never for the process to end. ``receive`` yields
    ``(channel, payload)`` until the session is over; for exec its last item is the
    ERROR channel's JSON. ``close`` ends the process or connection if it still runs and
    frees everything; it may be called more than once and after the end.
    """

    async def send(self, channel: int, payload: bytes) -> None: ...

    def receive(self) -> AsyncIterator[tuple[int, bytes]]: ...

    async def close(self) -> None: ...


def frame(channel: int, payload: bytes = b"") -> bytes:
    """One message: the channel byte, then the payload."""
    return bytes((channel,)) + payload


def unframe(message: bytes) -> tuple[int, bytes]:
    """A message's channel and payload; ``ValueError`` for an empty message."""
    if not message:
        raise ValueError("an empty message has no channel byte")
    return message[0], message[1:]


def exited(code: int) -> bytes:
    """The ERROR channel's payload for a command that ran and exited with ``code``."""
    return json.dumps({"exit_code": code}).encode()


def failed(message: str) -> bytes:
    """The ERROR channel's payload for a session that could not run or was ended."""
    return json.dumps({"error": message}).encode()
