"""The admission webhooks on a thread of their own: they answer while the provider's
event loop is busy, a server that cannot start says so to its starter, and stopping
closes the port."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import urllib.request

import pytest

from tests.unit.admission import test_mutation
from vk_fargate import errors
from vk_fargate.admission import server, worker
from vk_fargate.fargate import profiles
from vk_fargate.kubelet import tls


class Static:
    def __init__(self) -> None:
        selector = profiles.Selector(namespace="fargate-workload")
        self.items = [profiles.Profile(name="fargate", selectors=[selector])]

    def profiles(self) -> list[profiles.Profile]:
        return list(self.items)

    def count(self) -> int:
        return len(self.items)


def _review(port: int, cert: bytes) -> dict[str, object]:
    context = ssl.create_default_context(cadata=cert.decode())
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}{server.MUTATE_PATH}",
        data=json.dumps(test_mutation.a_review(test_mutation.a_pod())).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        reply: dict[str, object] = json.loads(response.read())
        return reply


async def test_the_webhook_answers_while_the_provider_loop_is_busy() -> None:
    serving = tls.server_context(client_ca=None, hosts=("127.0.0.1",))
    admission = worker.Worker(server.AdmissionServer(Static(), serving.context))
    port = await admission.start()
    replies: list[dict[str, object]] = []
    answered = threading.Event()

    def call() -> None:
        replies.append(_review(port, serving.cert))
        answered.set()

    caller = threading.Thread(target=call, name="api-server")
    try:
        caller.start()
        # The provider's loop, busy: it does not come back to its queue until the
        # answer came or 10 s passed. On this loop, the webhook could not answer.
        assert answered.wait(timeout=10), "no answer while the provider's loop was busy"
        response = replies[0]["response"]
        assert isinstance(response, dict) and response["allowed"] and "patch" in response
    finally:
        caller.join(timeout=10)
        await admission.stop()
    with pytest.raises(OSError):
        _review(port, serving.cert)


async def test_a_server_that_cannot_start_raises_to_its_starter() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serving = tls.server_context(client_ca=None, hosts=("127.0.0.1",))
        admission = worker.Worker(server.AdmissionServer(Static(), serving.context, port=port))
        with pytest.raises(errors.ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await admission.start()
        await admission.stop()
