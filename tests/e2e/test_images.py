"""The local images are real OCI images: pushed to and pulled back from a real registry,
unpacked by umoci and run by runc in a root filesystem of their own.

The configs are Docker Hub's (busybox: no Entrypoint, ``Cmd ["sh"]``; nginx: ``nginx -g
'daemon off;'``), the two share their base layer blob, and nginx is self-contained: the
binary and the libraries it links are in the image, not borrowed from the host. CoreDNS's
is upstream's shape (``Entrypoint ["/coredns"]``, nothing else in it) and its static
binary runs in it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from vk_fargate.devcluster import coredns, images
from vk_fargate.devcluster import registry as devregistry

pytestmark = pytest.mark.e2e
# The capabilities containerd gives a container by default (runc's own spec has three).
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip


def skopeo(*argv: str) -> str:
    done = subprocess.run(["skopeo", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def inspect(
    registry: devregistry.Registry, name: str, *, config: bool = False, path: str | None = None
) -> Any:
    """The manifest (or ``config``) of ``library/NAME:latest``, or of ``path`` (repo:tag)."""
    extra = ["--config"] if config else ["--raw"]
    ref = f"docker://{registry.host}/{path or f'library/{name}:latest'}"
    return json.loads(skopeo("inspect", "--tls-verify=false", *extra, ref))


def run_image(
    registry: devregistry.Registry,
    name: str,
    argv: list[str],
    tmp: Path,
    *,
    path: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Pull ``name`` (``library/NAME:latest``, or ``path``) back from the registry, unpack
    it, and run ``argv`` in it with runc."""
    layout, bundle = tmp / "pulled", tmp / f"bundle-{uuid.uuid4().hex[:8]}"
    skopeo(
        "copy", "--quiet", "--src-tls-verify=false",
        f"docker://{registry.host}/{path or f'library/{name}:latest'}", f"oci:{layout}:{name}",
    )  # fmt: skip
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{name}", str(bundle)], check=True, timeout=120
    )
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(args=argv, terminal=False)
    caps = spec["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        caps[kind] = DEFAULT_CAPS
    (bundle / "config.json").write_text(json.dumps(spec))
    state = tmp / "runc"
    return subprocess.run(
        ["runc", "--root", str(state), "run", "--bundle", str(bundle), f"t-{uuid.uuid4().hex}"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def filled(registry: devregistry.Registry) -> devregistry.Registry:
    """The session's registry (tests/conftest.py), filled with the local images."""
    return registry


def test_busybox_is_docker_hubs_shape_so_args_replace_cmd(filled: devregistry.Registry) -> None:
    config = inspect(filled, "busybox", config=True)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert "Entrypoint" not in config["config"] or not config["config"]["Entrypoint"]
    assert config["config"]["Cmd"] == ["sh"]
    assert any(e.startswith("PATH=") for e in config["config"]["Env"])


def test_nginx_runs_daemon_off_and_shares_the_base_layer(filled: devregistry.Registry) -> None:
    config = inspect(filled, "nginx", config=True)["config"]
    assert config["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert config["ExposedPorts"] == {"80/tcp": {}}
    assert config["StopSignal"] == "SIGQUIT"
    nginx_layers = [layer["digest"] for layer in inspect(filled, "nginx")["layers"]]
    busybox_layers = [layer["digest"] for layer in inspect(filled, "busybox")["layers"]]
    assert len(nginx_layers) == 2 and nginx_layers[0] == busybox_layers[0]


def test_a_container_of_busybox_sees_the_images_files_not_the_hosts(
    filled: devregistry.Registry, tmp_path: Path
) -> None:
    marker = Path("/tmp") / f"host-marker-{uuid.uuid4().hex}"
    marker.write_text("host secret\n")
    try:
        done = run_image(
            filled,
            "busybox",
            ["sh", "-c", f"head -1 /etc/passwd; test -e {marker} && echo LEAK; ls -A /usr/sbin"],
            tmp_path,
        )
    finally:
        marker.unlink()
    assert done.returncode == 0, done.stderr
    # The image's passwd; no host marker; the host's /usr/sbin (nginx, ip, ...) is not here.
    assert done.stdout == "root:x:0:0:root:/root:/bin/sh\n"


def test_nginx_is_self_contained(filled: devregistry.Registry, tmp_path: Path) -> None:
    done = run_image(filled, "nginx", ["nginx", "-t"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
    page = run_image(filled, "nginx", ["cat", "/usr/share/nginx/html/index.html"], tmp_path)
    assert "<title>Welcome to nginx!</title>" in page.stdout


def test_coredns_is_upstreams_shape_and_its_static_binary_runs_alone(
    filled: devregistry.Registry, coredns_binary: Path | None, tmp_path: Path
) -> None:
    if coredns_binary is None:
        pytest.skip("CoreDNS is not built here (Go is missing)")
    path = f"{coredns.REPOSITORY}:{coredns.VERSION}"
    assert f"{filled.host}/{path}" in filled.images
    config = inspect(filled, "coredns", config=True, path=path)["config"]
    assert config["Entrypoint"] == ["/coredns"]
    assert not config.get("Cmd")
    assert config["ExposedPorts"] == {"53/tcp": {}, "53/udp": {}}
    assert len(inspect(filled, "coredns", path=path)["layers"]) == 1  # the binary alone
    number = coredns.VERSION.removeprefix("v")
    assert coredns.version_line(coredns_binary) == f"CoreDNS-{number}"
    done = run_image(filled, "coredns", ["/coredns", "-version"], tmp_path, path=path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"CoreDNS-{number}"
    listing = run_image(filled, "coredns", ["/coredns", "-plugins"], tmp_path, path=path)
    for plugin in ("kubernetes", "forward", "health", "ready", "loop", "prometheus"):
        assert plugin in listing.stdout.split(), plugin


def test_the_layout_is_built_once_per_machine(tmp_path: Path) -> None:
    first = images.build(tmp_path)
    index = (first / "index.json").read_bytes()
    assert images.build(tmp_path) == first
    assert (first / "index.json").read_bytes() == index
    refs = {
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads(index)["manifests"]
    }
    assert refs == {"busybox", "busybox-nonroot", "nginx"}
