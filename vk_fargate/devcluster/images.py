"""Real container images for the local stack and the tests, built from this machine's
Debian packages: nothing can come from a public registry here.

busybox and nginx share one base layer, as images of one distribution do:

- ``busybox``: Debian's static busybox with every applet linked in ``/bin``, and
  ``/etc/passwd``/``group``; no Entrypoint and ``Cmd ["sh"]``, as Docker Hub's busybox,
  so ``kubectl run --image=busybox -- sleep 3600`` runs ``sleep 3600``.
- ``nginx``: the base, plus Debian's nginx and the libraries ``ldd`` names, a config of
  its own (port 80, logs to the container's stdout and stderr) and the welcome page;
  ``Cmd ["nginx", "-g", "daemon off;"]``, ``StopSignal SIGQUIT``, port 80, as Docker
  Hub's nginx.
- ``coredns/coredns:<version>`` (once ``coredns`` has built the binary): the static
  CoreDNS binary as ``/coredns`` alone, ``Entrypoint ["/coredns"]``, ports 53/udp and
  53/tcp, as upstream's ``registry.k8s.io/coredns/coredns``. Unlike upstream's it runs
  as root (upstream: user nonroot and a file capability to bind port 53); the
  Deployment drops every capability but ``NET_BIND_SERVICE`` either way.

umoci writes them into one OCI image layout (blobs content-addressed, so the shared
layer is stored once) under the cache, keyed by the packages' versions, CoreDNS's
version and ``RECIPE``: built once per machine, in about a second (a few more to
compress CoreDNS's binary). skopeo then pushes them to
a registry under the names users write (``nginx``, ``docker.io/library/nginx`` and
``nginx:latest`` are all ``library/nginx:latest`` there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from vk_fargate import errors
from vk_fargate.devcluster import coredns

RECIPE = "4"  # bump when an image's content or configuration changes
REF_NAME = "org.opencontainers.image.ref.name"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PACKAGES = ("busybox-static", "nginx", "libc6")
BUSYBOX = Path("/usr/bin/busybox")
NGINX = Path("/usr/sbin/nginx")
WELCOME = Path("/usr/share/nginx/html/index.html")
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nginx:x:101:101:nginx:/nonexistent:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nnginx:x:101:\nnogroup:x:65534:\n"
NGINX_CONF = """\
user nginx;
worker_processes 1;
error_log /var/log/nginx/error.log notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    server {
        listen 80 default_server;
        server_name localhost;
        location / {
            root /usr/share/nginx/html;
            index index.html;
        }
    }
}
"""


@dataclasses.dataclass(frozen=True)
class Image:
    """One image of the layout: the image it builds on, its own layer, its config."""

    name: str
    layer: Callable[[Path], None] | None  # fills a folder with what the layer adds
    cmd: tuple[str, ...]
    base: str | None = None  # an earlier image, whose layers come first (the same blobs)
    tag: str = "latest"
    user: str | None = None  # the image config's User

    @property
    def key(self) -> str:
        """Its name in the layout (one per name and tag)."""
        return self.name if self.tag == "latest" else f"{self.name}-{self.tag}"

    ports: tuple[str, ...] = ()
    stop_signal: str | None = None
    entrypoint: tuple[str, ...] = ()
    repository: str | None = None  # its path in a registry; None: library/<name>

    @property
    def path(self) -> str:
        return self.repository or f"library/{self.name}"


def _base(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = _run([str(BUSYBOX), "--list"]).split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    for folder in ("etc", "root", "tmp", "var/tmp", "run", "usr/bin", "usr/sbin"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)


def _nginx(root: Path) -> None:
    _copy(NGINX, root)
    for library in _libraries(NGINX):
        _copy(library, root)
    conf = root / "etc" / "nginx"
    conf.mkdir(parents=True)
    (conf / "nginx.conf").write_text(NGINX_CONF)
    shutil.copy2("/etc/nginx/mime.types", conf / "mime.types")
    html = root / "usr" / "share" / "nginx" / "html"
    html.mkdir(parents=True)
    shutil.copy2(WELCOME, html / "index.html")
    logs = root / "var" / "log" / "nginx"
    logs.mkdir(parents=True)
    (logs / "access.log").symlink_to("/dev/stdout")  # as Docker Hub's image does
    (logs / "error.log").symlink_to("/dev/stderr")
    (root / "var" / "lib" / "nginx").mkdir(parents=True)


def _libraries(binary: Path) -> list[Path]:
    """The shared objects ``ldd`` says ``binary`` loads, the dynamic loader included."""
    found = []
    for line in _run(["ldd", str(binary)]).splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            found.append(Path(path))
    return found


def _copy(source: Path, root: Path) -> None:
    """Copy ``source`` to the same path under ``root``, symlinks resolved."""
    target = root / source.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), target)


IMAGES = (
    Image("busybox", _base, cmd=("sh",)),
    # busybox whose config says USER 1000:1000 (its layers are busybox's own)
    Image("busybox", None, cmd=("sh",), base="busybox", tag="nonroot", user="1000:1000"),
    Image(
        "nginx",
        _nginx,
        base="busybox",
        cmd=("nginx", "-g", "daemon off;"),
        ports=("80/tcp",),
        stop_signal="SIGQUIT",
    ),
)


def _coredns_layer(binary: Path) -> Callable[[Path], None]:
    def layer(root: Path) -> None:
        shutil.copy2(binary, root / "coredns")
        (root / "coredns").chmod(0o755)

    return layer


CORE_DNS = Image(  # its layer: the binary, found in the cache when building
    "coredns",
    None,
    cmd=(),
    tag=coredns.VERSION,
    entrypoint=("/coredns",),
    ports=("53/tcp", "53/udp"),
    repository=coredns.REPOSITORY,
)


def wanted(cache: Path) -> tuple[Image, ...]:
    """``IMAGES``, and the CoreDNS image when its binary has been built under ``cache``."""
    binary = coredns.binary(cache)
    if binary is None:
        return IMAGES
    return (*IMAGES, dataclasses.replace(CORE_DNS, layer=_coredns_layer(binary)))


def tags(layout: Path) -> set[str]:
    """The image keys (tags) a built layout holds."""
    index = json.loads((layout / "index.json").read_text())
    return {
        m["annotations"][REF_NAME]
        for m in index.get("manifests") or []
        if REF_NAME in (m.get("annotations") or {})
    }


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise errors.ImageBuildError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise errors.ImageBuildError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-400:]}"
        )
    return done.stdout


def _versions() -> str:
    return _run(["dpkg-query", "-W", "-f", "${Package}=${Version}\\n", *PACKAGES])


def cache_key(cache: Path | None = None) -> str:
    """What the built layout depends on: the recipe, the Debian packages' versions and
    the CoreDNS version when its binary is in ``cache``."""
    dns = f"coredns={coredns.VERSION}\n" if cache and coredns.binary(cache) else ""
    return hashlib.sha256(f"{RECIPE}\n{_versions()}{dns}".encode()).hexdigest()[:16]


def build(cache: Path) -> Path:
    """The OCI layout with every image of ``wanted`` (tag = key), built if missing."""
    layout = cache / "images" / cache_key(cache) / "layout"
    if (layout / "index.json").exists():
        return layout
    layout.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layout.parent) as scratch:
        work = Path(scratch)
        built = work / "layout"
        _run(["umoci", "init", "--layout", str(built)])
        for image in wanted(cache):
            _build_image(built, image, work / image.key)
        try:
            built.replace(layout)  # whole or not at all
        except OSError:
            if not (layout / "index.json").exists():  # not a concurrent build's result
                raise
    return layout


def _build_image(layout: Path, image: Image, work: Path) -> None:
    ref = f"{layout}:{image.key}"
    config = ["umoci", "config", "--os", "linux", "--architecture", "amd64"]
    if image.base is None:
        _run(["umoci", "new", "--image", ref])
        config += ["--image", ref]
    else:  # a new tag of the base: its very layers, then ours on top
        config += ["--image", f"{layout}:{image.base}", "--tag", image.key]
    if image.user:
        config += ["--config.user", image.user]
    config += ["--config.env", PATH_ENV, "--clear=config.cmd"]
    for word in image.cmd:
        config += ["--config.cmd", word]
    for word in image.entrypoint:
        config += ["--config.entrypoint", word]
    for port in image.ports:
        config += ["--config.exposedports", port]
    if image.stop_signal:
        config += ["--config.stopsignal", image.stop_signal]
    _run(config)
    if image.layer is not None:
        work.mkdir(parents=True)
        image.layer(work)
        _run(["umoci", "insert", "--image", ref, str(work), "/"])


def push(layout: Path, registry: str) -> list[str]:
    """Push every image ``layout`` holds to ``registry`` (host:port, plain HTTP) as
    ``library/NAME:TAG`` (or its ``repository``); the references pushed."""
    pushed = []
    held = tags(layout)
    for image in (*IMAGES, CORE_DNS):
        if image.key not in held:
            continue
        target = f"{registry}/{image.path}:{image.tag}"
        argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        _run([*argv, f"oci:{layout}:{image.key}", f"docker://{target}"])
        pushed.append(target)
    return pushed
