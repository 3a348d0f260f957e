"""Tests of images: repository names, table look-up, and what a container's argv becomes."""

from __future__ import annotations

import pytest

from vk_fargate.fleet import models
from vk_fargate.fleetd import config, images

TABLE = {
    "nginx": config.Image(command=["/usr/sbin/nginx", "-g", "daemon off;"]),
    "busybox": config.Image(command=["/usr/bin/busybox", "sh"], multicall="/usr/bin/busybox"),
    "web": config.Image(
        command=["/usr/bin/python3", "-m", "http.server"],
        args=["--directory", "{sandbox}/www", "8080"],
    ),
    "team/tool": config.Image(command=["{sandbox}/bin/tool"], args=["--serve"]),
}
SANDBOX = "/var/lib/fleet/microvms/vm-1"


def container(
    image: str, command: list[str] | None = None, args: list[str] | None = None
) -> models.Container:
    return models.Container(name="app", image=image, command=command or [], args=args or [])


@pytest.mark.parametrize(
    ("image", "want"),
    [
        ("nginx", "nginx"),
        ("nginx:1.25", "nginx"),
        ("nginx:1.25-alpine", "nginx"),
        ("nginx@sha256:" + "a" * 64, "nginx"),
        ("nginx:1.25@sha256:" + "b" * 64, "nginx"),
        ("library/nginx", "nginx"),
        ("library/nginx:latest", "nginx"),
        ("docker.io/library/nginx:1.25", "nginx"),
        ("docker.io/library/nginx:1.25@sha256:" + "c" * 64, "nginx"),
        ("docker.io/bitnami/nginx:1.25", "bitnami/nginx"),
        ("bitnami/nginx", "bitnami/nginx"),
        ("registry.example.com/team/tool:v2", "team/tool"),
        ("registry.example.com:5000/team/tool:v2", "team/tool"),
        ("localhost:5000/tool", "tool"),
        ("localhost/tool:dev", "tool"),
        ("public.ecr.aws/nginx/nginx:stable", "nginx/nginx"),
        ("ghcr.io/org/sub/image:tag", "org/sub/image"),
    ],
)
def test_repository(image: str, want: str) -> None:
    assert images.repository(image) == want


@pytest.mark.parametrize(
    ("image", "want"),
    [
        ("docker.io/library/busybox:1.36", "busybox"),
        ("registry.example.com/team/tool", "team/tool"),
        ("quay.io/someone/nginx:1.0", "nginx"),  # by the last path part
        ("ghcr.io/other/tool", None),  # "other/tool" and "tool" are both unknown
        ("redis", None),
    ],
)
def test_lookup(image: str, want: str | None) -> None:
    assert images.lookup(image, TABLE) is (TABLE[want] if want else None)


def test_command_and_args_replace_the_tables_entrypoint_and_args() -> None:
    resolved = images.resolve(
        container("nginx", ["/bin/echo"], ["hello", "world"]), TABLE, sandbox=SANDBOX
    )
    assert resolved == images.Resolved(["/bin/echo", "hello", "world"])


def test_command_without_args_drops_the_tables_args() -> None:
    resolved = images.resolve(container("web", ["/bin/true"]), TABLE, sandbox=SANDBOX)
    assert resolved.argv == ["/bin/true"]


def test_no_command_runs_the_tables_entrypoint_and_args() -> None:
    resolved = images.resolve(container("nginx:1.25"), TABLE, sandbox=SANDBOX)
    assert resolved == images.Resolved(["/usr/sbin/nginx", "-g", "daemon off;"])


def test_args_alone_replace_only_the_tables_args() -> None:
    resolved = images.resolve(container("web", args=["9090"]), TABLE, sandbox=SANDBOX)
    assert resolved.argv == ["/usr/bin/python3", "-m", "http.server", "9090"]


def test_sandbox_is_expanded_in_the_tables_command_and_args() -> None:
    assert images.resolve(container("web"), TABLE, sandbox=SANDBOX).argv == [
        "/usr/bin/python3",
        "-m",
        "http.server",
        "--directory",
        f"{SANDBOX}/www",
        "8080",
    ]
    assert images.resolve(
        container("registry.example.com/team/tool:v1"), TABLE, sandbox=SANDBOX
    ).argv == [f"{SANDBOX}/bin/tool", "--serve"]


def test_sandbox_is_not_expanded_in_the_containers_own_command() -> None:
    resolved = images.resolve(
        container("web", ["/bin/echo"], ["{sandbox}"]), TABLE, sandbox=SANDBOX
    )
    assert resolved.argv == ["/bin/echo", "{sandbox}"]


@pytest.mark.parametrize(
    ("command", "args", "want"),
    [
        (["sh"], ["-c", "echo hi"], ["/usr/bin/busybox", "sh", "-c", "echo hi"]),
        (["sleep", "5"], [], ["/usr/bin/busybox", "sleep", "5"]),
        # A path is run as given, not through the multicall binary.
        (["/bin/sh"], ["-c", "true"], ["/bin/sh", "-c", "true"]),
        (["./run"], [], ["./run"]),
    ],
)
def test_multicall_runs_bare_command_names_through_busybox(
    command: list[str], args: list[str], want: list[str]
) -> None:
    resolved = images.resolve(container("busybox:1.36", command, args), TABLE, sandbox=SANDBOX)
    assert resolved == images.Resolved(want)


def test_bare_command_names_of_other_images_are_left_alone() -> None:
    resolved = images.resolve(container("nginx", ["sh"], ["-c", "x"]), TABLE, sandbox=SANDBOX)
    assert resolved.argv == ["sh", "-c", "x"]


def test_busybox_without_command_runs_its_shell() -> None:
    resolved = images.resolve(container("busybox"), TABLE, sandbox=SANDBOX)
    assert resolved.argv == ["/usr/bin/busybox", "sh"]


def test_unknown_image_with_a_command_runs_the_command() -> None:
    resolved = images.resolve(container("redis:7", ["/usr/bin/env"]), TABLE, sandbox=SANDBOX)
    assert resolved == images.Resolved(["/usr/bin/env"])


def test_unknown_image_without_a_command_cannot_run_and_says_why() -> None:
    resolved = images.resolve(container("docker.io/library/redis:7"), TABLE, sandbox=SANDBOX)
    assert resolved.argv is None
    assert resolved.error is not None
    assert "'docker.io/library/redis:7'" in resolved.error
    assert "cannot be pulled here" in resolved.error
    assert "sets no command" in resolved.error


def test_unknown_image_with_only_args_still_cannot_run() -> None:
    resolved = images.resolve(container("redis", args=["--port", "1"]), TABLE, sandbox=SANDBOX)
    assert resolved.argv is None
    assert resolved.error


def test_empty_table_needs_a_command() -> None:
    assert images.resolve(container("nginx"), {}, sandbox=SANDBOX).argv is None
    assert images.resolve(container("nginx", ["x"]), {}, sandbox=SANDBOX).argv == ["x"]
