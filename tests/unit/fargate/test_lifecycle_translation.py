"""A pod's lifecycle hooks and termination message fields as the fleet takes them
(``microvms.hook``, ``microvms.spec``): named ports resolved, a tcpSocket hook refused."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from vk_fargate.fargate import microvms
from vk_fargate.fleet import models

WEB = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}


def test_no_hook_is_none() -> None:
    assert microvms.hook(WEB, "preStop") is None
    assert (
        microvms.hook({**WEB, "lifecycle": {"postStart": {"sleep": {"seconds": 1}}}}, "preStop")
        is None
    )


def test_exec_http_and_sleep_hooks() -> None:
    container: dict[str, Any] = {
        **WEB,
        "lifecycle": {
            "postStart": {"exec": {"command": ["sh", "-c", "echo hi"]}},
            "preStop": {
                "httpGet": {
                    "port": "http",
                    "path": "/quit",
                    "httpHeaders": [{"name": "X-Stop", "value": "1"}],
                }
            },
        },
    }
    assert microvms.hook(container, "postStart") == models.LifecycleHandler(
        exec=models.ExecAction(command=["sh", "-c", "echo hi"])
    )
    assert microvms.hook(container, "preStop") == models.LifecycleHandler(
        http_get=models.HTTPGetAction(
            port=8080, path="/quit", headers=[models.HTTPHeader(name="X-Stop", value="1")]
        )
    )
    slept = {**WEB, "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}
    assert microvms.hook(slept, "preStop") == models.LifecycleHandler(
        sleep=models.SleepAction(seconds=5)
    )


@pytest.mark.parametrize(
    ("handler", "text"),
    [
        ({"tcpSocket": {"port": 8080}}, "exactly one of exec, http_get and sleep"),
        ({"httpGet": {"port": "admin"}}, "named port 'admin' is not among"),
    ],
)
def test_hooks_the_fleet_cannot_run_are_refused(handler: dict[str, Any], text: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=text):
        microvms.hook({**WEB, "lifecycle": {"preStop": handler}}, "preStop")


def test_termination_message_fields_and_defaults() -> None:
    assert models.Container(name="a", image="i").termination_message_path == "/dev/termination-log"
    assert models.Container(name="a", image="i").termination_message_policy == "File"
    with pytest.raises(pydantic.ValidationError):
        models.Container(name="a", image="i", termination_message_path="relative")
