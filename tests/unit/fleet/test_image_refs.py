"""Tests of fleet.images: references, pull-policy defaulting, argv, env and working dir."""

from __future__ import annotations

import pytest

from vk_fargate.fleet import images

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("library/nginx", "docker.io", "library/nginx", "latest", None),
        ("docker.io/library/nginx", "docker.io", "library/nginx", "latest", None),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/library/nginx", "docker.io", "library/nginx", "latest", None),
        ("index.docker.io/nginx:1", "docker.io", "library/nginx", "1", None),
        ("myorg/api:1.4", "docker.io", "myorg/api", "1.4", None),
        ("quay.io/org/app:v1", "quay.io", "org/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app", "localhost:5000", "app", "latest", None),
        (
            "127.0.0.1:5000/library/busybox:latest",
            "127.0.0.1:5000",
            "library/busybox",
            "latest",
            None,
        ),
        ("registry.example.com:443/a/b/c:tag", "registry.example.com:443", "a/b/c", "tag", None),
        ("[::1]:5000/app:v2", "[::1]:5000", "app", "v2", None),
        (
            "gcr.io/my-proj/my_app__x.y:V1_2-rc.3",
            "gcr.io",
            "my-proj/my_app__x.y",
            "V1_2-rc.3",
            None,
        ),
        (f"nginx@{DIGEST}", "docker.io", "library/nginx", None, DIGEST),
        (f"nginx:1.2@{DIGEST}", "docker.io", "library/nginx", "1.2", DIGEST),
        (f"quay.io/org/app@sha512:{HEX * 2}", "quay.io", "org/app", None, f"sha512:{HEX * 2}"),
        # containerd's rule: an uppercase first component is a registry (Hub namespaces aren't).
        ("Registry/app", "Registry", "app", "latest", None),
        # A bare name is never a registry, not even "localhost" or "host:port".
        ("localhost", "docker.io", "library/localhost", "latest", None),
        ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ],
)
def test_parse(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    assert images.parse(text) == images.Reference(registry, repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("myorg/api:1.4", "docker.io/myorg/api:1.4"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        (f"nginx@{DIGEST}", f"docker.io/library/nginx@{DIGEST}"),
        (f"nginx:1.2@{DIGEST}", f"docker.io/library/nginx:1.2@{DIGEST}"),
    ],
)
def test_str_is_the_normalized_form(text: str, normalized: str) -> None:
    assert str(images.parse(text)) == normalized
    assert images.parse(normalized) == images.parse(text)


def test_name_and_with_digest() -> None:
    ref = images.parse("nginx:1.25")
    assert ref.name == "docker.io/library/nginx"
    assert ref.with_digest(DIGEST) == f"docker.io/library/nginx@{DIGEST}"
    with pytest.raises(ValueError, match="invalid digest"):
        ref.with_digest("sha256:abc")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nginx:",
        "nginx@sha256:abc",
        f"nginx@sha256:{HEX.upper()}",
        f"nginx@md5:{HEX}",
        f"nginx@sha512:{HEX}",
        ":tag",
        "a//b",
        "nginx:tag with space",
        " nginx",
        "nginx/",
        "-nginx",
        "nginx:-tag",
        f"nginx:{'t' * 129}",
        "quay.io/org/app@",
        "my-.registry/app",
        HEX,
        "a/" * 127 + "b",
    ],
)
def test_invalid_references(text: str) -> None:
    with pytest.raises(images.InvalidImageName) as caught:
        images.parse(text)
    assert str(caught.value).startswith(
        f'Failed to apply default image tag "{text}": couldn\'t parse image name "{text}": '
    )
    assert isinstance(caught.value, ValueError)


def test_invalid_reference_message_is_the_kubelets() -> None:
    with pytest.raises(images.InvalidImageName) as caught:
        images.parse("nginx:")
    assert str(caught.value) == (
        'Failed to apply default image tag "nginx:": '
        'couldn\'t parse image name "nginx:": invalid reference format'
    )


@pytest.mark.parametrize(
    ("text", "repository"),
    [("Nginx", "library/Nginx"), ("myorg/API:1", "myorg/API"), ("quay.io/Org/app", "Org/app")],
)
def test_uppercase_repository_is_invalid(text: str, repository: str) -> None:
    with pytest.raises(images.InvalidImageName, match="must be lowercase") as caught:
        images.parse(text)
    assert f"repository name ({repository})" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("localhost:5000/app", "Always"),
        (f"nginx:latest@{DIGEST}", "Always"),
        ("nginx:1.25", "IfNotPresent"),
        ("quay.io/org/app:v1", "IfNotPresent"),
        (f"nginx@{DIGEST}", "IfNotPresent"),
        (f"nginx:1.2@{DIGEST}", "IfNotPresent"),
        # Kubernetes defaults first and leaves a bad name to the kubelet.
        ("Nginx", "IfNotPresent"),
    ],
)
def test_default_pull_policy(text: str, policy: str) -> None:
    assert images.default_pull_policy(text) == policy


BUSYBOX = images.ImageConfig(cmd=("sh",), env=("PATH=/usr/local/sbin:/usr/local/bin:/bin",))
NGINX = images.ImageConfig(
    entrypoint=("/docker-entrypoint.sh",),
    cmd=("nginx", "-g", "daemon off;"),
    env=("PATH=/usr/sbin:/bin", "NGINX_VERSION=1.25.3"),
    working_dir="/usr/share/nginx",
    user="101",
)


def test_kubectl_run_busybox_sets_only_args() -> None:
    # kubectl run w --image=busybox -- sleep 3600
    assert images.argv(BUSYBOX, [], ["sleep", "3600"]) == ["sleep", "3600"]
    assert images.argv(BUSYBOX, [], []) == ["sh"]


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ([], [], ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]),
        ([], ["nginx", "-T"], ["/docker-entrypoint.sh", "nginx", "-T"]),
        (["/usr/sbin/nginx"], [], ["/usr/sbin/nginx"]),
        (["/usr/sbin/nginx"], ["-g", "daemon off;"], ["/usr/sbin/nginx", "-g", "daemon off;"]),
    ],
)
def test_argv_command_and_args(command: list[str], args: list[str], expected: list[str]) -> None:
    assert images.argv(NGINX, command, args) == expected


def test_argv_empty_entrypoint_string_counts_as_none() -> None:
    config = images.ImageConfig(entrypoint=("",), cmd=("python3",))
    assert images.argv(config, [], []) == ["python3"]
    assert images.argv(config, [], ["-V"]) == ["-V"]


@pytest.mark.parametrize(
    "config",
    [images.ImageConfig(), images.ImageConfig(entrypoint=("",)), images.ImageConfig(env=("A=1",))],
)
def test_argv_nothing_to_run(config: images.ImageConfig) -> None:
    with pytest.raises(ValueError, match=r"^no command specified$"):
        images.argv(config, [], [])


@pytest.mark.parametrize(
    ("image_env", "pod_env", "expected"),
    [
        ((), [], []),
        (("A=1", "B=2"), [], [("A", "1"), ("B", "2")]),
        ((), [("A", "1")], [("A", "1")]),
        (
            ("PATH=/bin", "HOME=/root", "LANG=C"),
            [("EXTRA", "x"), ("HOME", "/home/app"), ("FIRST", "y")],
            [
                ("PATH", "/bin"),
                ("HOME", "/home/app"),
                ("LANG", "C"),
                ("EXTRA", "x"),
                ("FIRST", "y"),
            ],
        ),
        (("A=x=y", "EMPTY="), [], [("A", "x=y"), ("EMPTY", "")]),
        (("NOEQUALS", "A=1"), [], [("A", "1")]),
        (("A=1",), [("A", "2"), ("A", "3")], [("A", "3")]),
        (("A=1", "B=2", "A=3"), [], [("A", "3"), ("B", "2")]),
        (("A=1",), [("A", "")], [("A", "")]),
    ],
)
def test_environment(
    image_env: tuple[str, ...], pod_env: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    config = images.ImageConfig(env=image_env)
    assert images.environment(config, pod_env) == expected


@pytest.mark.parametrize(
    ("image_dir", "pod_dir", "expected"),
    [
        ("/usr/share/nginx", "/srv", "/srv"),
        ("/usr/share/nginx", None, "/usr/share/nginx"),
        ("/usr/share/nginx", "", "/usr/share/nginx"),
        ("", "/srv", "/srv"),
        ("", None, "/"),
        ("", "", "/"),
    ],
)
def test_working_dir(image_dir: str, pod_dir: str | None, expected: str) -> None:
    assert images.working_dir(images.ImageConfig(working_dir=image_dir), pod_dir) == expected


def test_from_oci_reads_the_config_section() -> None:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "101",
            "Env": ["PATH=/usr/sbin:/bin", "NGINX_VERSION=1.25.3"],
            "Entrypoint": ["/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "WorkingDir": "/usr/share/nginx",
            "ExposedPorts": {"80/tcp": {}},
            "StopSignal": "SIGQUIT",
        },
        "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
    }
    assert images.ImageConfig.from_oci(doc) == NGINX


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"config": None},
        {"config": {}},
        {
            "config": {
                "Entrypoint": None,
                "Cmd": None,
                "Env": None,
                "WorkingDir": None,
                "User": None,
            }
        },
        {"config": {"Entrypoint": [], "Cmd": [], "Env": [], "WorkingDir": "", "User": ""}},
    ],
)
def test_from_oci_missing_or_null_keys(doc: dict[str, object]) -> None:
    assert images.ImageConfig.from_oci(doc) == images.ImageConfig((), (), (), "", "")


def test_from_oci_busybox() -> None:
    doc = {"config": {"Env": list(BUSYBOX.env), "Cmd": ["sh"]}}
    config = images.ImageConfig.from_oci(doc)
    assert config == BUSYBOX
    assert images.argv(config, [], ["sleep", "3600"]) == ["sleep", "3600"]


@pytest.mark.parametrize("bad", ["sh -c true", [1, 2], {"a": "b"}])
def test_from_oci_rejects_non_string_lists(bad: object) -> None:
    with pytest.raises(ValueError, match="Cmd must be a list of strings"):
        images.ImageConfig.from_oci({"config": {"Cmd": bad}})


def test_command_and_args_are_expanded_from_the_env_as_the_kubelet_does() -> None:
    env = {"WHO": "world", "IP": "10.0.1.2"}
    items = ["echo", "$(WHO)", "$$(WHO)", "$(NOPE)", "--bind=$(IP):80", "$$$(WHO)"]
    assert images.expand_all(items, env) == [
        "echo", "world", "$(WHO)", "$(NOPE)", "--bind=10.0.1.2:80", "$world"
    ]  # fmt: skip
