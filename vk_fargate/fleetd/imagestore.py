"""A host's image service: pull OCI images from registries and unpack them for runc.

Images go into one OCI image layout under the state directory: blobs are stored by
digest and verified by skopeo as they arrive, so a layer two images share is
downloaded and stored once, and a second pull of a present image (``Always``) fetches
only its manifest: unchanged, nothing is copied. Pulls of one reference share one
download (single flight); writes to the layout are serialized, since skopeo and umoci
update its ``index.json`` in place.
Registries are reached as containerd's ``hosts.toml`` says: a mirror per registry
(``docker.io`` -> the local registry), plain HTTP or TLS with a CA bundle.

skopeo and umoci (the containers and OCI projects' own tools, packaged by Debian) do
the OCI details: manifests, image indexes (linux/amd64 is chosen), digests, layer
whiteouts, ownership and modes, and never following a link out of the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from vk_fargate import errors
from vk_fargate.fleet import images
from vk_fargate.fleetd import config

PULL_TIMEOUT = 600.0  # seconds for one skopeo copy


class PullError(errors.VkFargateError):
    """A pull failed; ``message`` is what the registry or the tool said."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotPresent(errors.VkFargateError):
    """``Never`` was asked and the image is not on this host."""


@dataclasses.dataclass(frozen=True)
class Pulled:
    reference: images.Reference
    digest: str  # of the manifest: the image's identity
    config: images.ImageConfig
    size: int  # bytes of the manifest's config and layers
    seconds: float  # spent pulling; 0 when it was already present
    present: bool  # already on this host, nothing pulled


class ImageStore:
    def __init__(
        self,
        root: Path,
        registries: dict[str, config.RegistryHost],
        *,
        budget_bytes: int | None = None,
    ) -> None:
        self.layout = root / "layout"
        self.unpacked_root = root / "unpacked"  # one read-only unpacked copy per image
        self.registries = registries
        self.budget_bytes = budget_bytes
        self.last_used: dict[str, float] = {}  # layout tag -> when a container last got it
        self._lock = asyncio.Lock()
        self._flights: dict[str, asyncio.Task[Pulled]] = {}

    async def ensure(
        self, reference: str, policy: str, *, credentials: str | None = None
    ) -> Pulled:
        """The image of ``reference``, pulled as ``policy`` (Always, IfNotPresent, Never)
        asks. Raises InvalidImageName, NotPresent or PullError."""
        ref = images.parse(reference)
        key = str(ref)
        self.last_used[_tag(ref)] = time.time()
        if policy != "Always":
            found = self._present(ref)
            if found is not None:
                return found
            if policy == "Never":
                raise NotPresent(
                    f'Container image "{reference}" is not present with pull policy of Never'
                )
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(
                self._pull(ref, credentials), name=f"pull-{key}"
            )
            self._flights[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        return await asyncio.shield(flight)

    def _landed(self, key: str, _flight: asyncio.Task[Pulled]) -> None:
        self._flights.pop(key, None)

    def _present(self, ref: images.Reference) -> Pulled | None:
        manifest = self._manifest(_tag(ref))
        if manifest is None:
            return None
        digest, doc = manifest
        return self._describe(ref, digest, doc, seconds=0.0, present=True)

    async def _pull(self, ref: images.Reference, credentials: str | None) -> Pulled:
        source, tls = self._source(ref)  # before any I/O
        options = [f"--src-tls-verify={'true' if tls.verify else 'false'}"]
        if tls.ca_dir:
            options += ["--src-cert-dir", str(tls.ca_dir)]
        if credentials:
            options += ["--src-creds", credentials]
        began = time.monotonic()
        held = self._manifest(_tag(ref))
        if held is not None:  # a manifest unchanged in the registry needs no copy at all
            inspect = ["skopeo", "inspect", "--raw", *_as_inspect(options), source]
            raw = await _run(inspect, secret=credentials)
            if "sha256:" + hashlib.sha256(raw).hexdigest() == held[0]:
                return self._describe(
                    ref, held[0], held[1], seconds=time.monotonic() - began, present=False
                )
        argv = ["skopeo", "copy", "--quiet", "--override-os", "linux", "--override-arch", "amd64"]
        argv += options
        async with self._lock:
            self.layout.parent.mkdir(parents=True, exist_ok=True)
            argv += [source, f"oci:{self.layout}:{_tag(ref)}"]
            await _run(argv, secret=credentials)
        manifest = self._manifest(_tag(ref))
        if manifest is None:
            raise PullError(f"{ref}: the pulled image is missing from the store")
        digest, doc = manifest
        return self._describe(ref, digest, doc, seconds=time.monotonic() - began, present=False)

    def _source(self, ref: images.Reference) -> tuple[str, config.RegistryHost]:
        """Where ``ref`` is pulled from. Only configured registries are reached: a host
        never contacts a registry its operator did not name."""
        host = self.registries.get(ref.registry)
        if host is None:
            known = ", ".join(sorted(self.registries))
            raise PullError(f"registry {ref.registry} is not configured on this fleet ({known})")
        endpoint = host.mirror or f"https://{ref.registry}"
        scheme, _, address = endpoint.partition("://")
        tls = host if scheme == "https" else host.model_copy(update={"verify": False})
        where = f"{ref.repository}@{ref.digest}" if ref.digest else f"{ref.repository}:{ref.tag}"
        return f"docker://{address.rstrip('/')}/{where}", tls

    def _manifest(self, tag: str) -> tuple[str, dict[str, Any]] | None:
        try:
            index = json.loads((self.layout / "index.json").read_text())
        except (OSError, ValueError):
            return None
        for entry in index.get("manifests") or []:
            if (entry.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
                digest = str(entry["digest"])
                return digest, self._blob(digest)
        return None

    def _blob(self, digest: str) -> dict[str, Any]:
        algorithm, _, value = digest.partition(":")
        document: dict[str, Any] = json.loads(
            (self.layout / "blobs" / algorithm / value).read_bytes()
        )
        return document

    def _describe(
        self,
        ref: images.Reference,
        digest: str,
        manifest: dict[str, Any],
        *,
        seconds: float,
        present: bool,
    ) -> Pulled:
        image_config = images.ImageConfig.from_oci(self._blob(manifest["config"]["digest"]))
        size = int(manifest["config"].get("size", 0)) + sum(
            int(layer.get("size", 0)) for layer in manifest.get("layers") or []
        )
        return Pulled(ref, digest, image_config, size, seconds, present)

    def size(self) -> int:
        """Bytes the layout's blobs take."""
        blobs = self.layout / "blobs"
        return (
            sum(f.stat().st_size for f in blobs.rglob("*") if f.is_file()) if blobs.exists() else 0
        )

    async def collect(self, in_use: set[str]) -> list[str]:
        """Over the budget, remove images no microVM uses (``in_use``: references),
        least recently used first, then the blobs nothing references any more; the
        layout tags removed, with their unpacked copies (no live container mounts one:
        the images of live microVMs stay)."""
        if self.budget_bytes is None or self.size() <= self.budget_bytes:
            return []
        keep = set()
        for reference in in_use:
            with contextlib.suppress(images.InvalidImageName):
                keep.add(_tag(images.parse(reference)))
        removed: list[str] = []
        async with self._lock:
            candidates = sorted(
                (t for t in self._tags() if t not in keep), key=lambda t: self.last_used.get(t, 0.0)
            )
            for tag in candidates:
                held = self._manifest(tag)
                await _run(["umoci", "rm", "--image", f"{self.layout}:{tag}"])
                if held is not None and held[0] not in {
                    m[0] for t in self._tags() if (m := self._manifest(t)) is not None
                }:
                    self._forget_unpacked({held[0]})
                await _run(["umoci", "gc", "--layout", str(self.layout)])
                removed.append(tag)
                self.last_used.pop(tag, None)
                if self.size() <= self.budget_bytes:
                    break
        return removed

    def _tags(self) -> list[str]:
        try:
            index = json.loads((self.layout / "index.json").read_text())
        except (OSError, ValueError):
            return []
        return [
            str((m.get("annotations") or {}).get("org.opencontainers.image.ref.name", ""))
            for m in index.get("manifests") or []
            if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        ]

    async def unpacked(self, pulled: Pulled) -> Path:
        """The image's OCI bundle (umoci's ``config.json`` + ``rootfs``), unpacked once
        per host and image (by manifest digest); containers mount over it, read-only."""
        home = self.unpacked_root / pulled.digest.removeprefix("sha256:")
        if (home / "config.json").exists():
            return home
        async with self._lock:  # also makes one unpack of an image serve all who wait
            if (home / "config.json").exists():
                return home
            staging = home.with_name(f".{home.name}.unpacking")
            await asyncio.to_thread(shutil.rmtree, staging, True)
            staging.parent.mkdir(parents=True, exist_ok=True)
            layout_ref = f"{self.layout}:{_tag(pulled.reference)}"
            await _run(["umoci", "unpack", "--image", layout_ref, str(staging)])
            staging.rename(home)  # config.json appears with the whole tree, never before
        return home

    def _forget_unpacked(self, digests: set[str]) -> None:
        """Remove unpacked copies of images no longer in the layout."""
        for digest in digests:
            shutil.rmtree(self.unpacked_root / digest.removeprefix("sha256:"), True)


def _tag(ref: images.Reference) -> str:
    """The layout's name for ``ref`` (OCI ref names allow few characters)."""
    return "r" + hashlib.sha256(str(ref).encode()).hexdigest()[:40]


def _as_inspect(copy_options: list[str]) -> list[str]:
    """skopeo copy's --src-* options as skopeo inspect spells them."""
    return [o.replace("--src-", "--", 1) for o in copy_options]


async def _run(argv: list[str], *, secret: str | None = None) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(PULL_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise PullError(f"{argv[0]} took more than {PULL_TIMEOUT:.0f}s") from None
    if process.returncode != 0:
        text = err.decode(errors="replace").strip()
        if secret:
            text = text.replace(secret, "***")
        raise PullError(_reason(text))
    return out


def _reason(text: str) -> str:
    """skopeo's last line, the part a user can act on (not found, unauthorized)."""
    line = text.splitlines()[-1] if text else "failed"
    return line.removeprefix("time=").split('msg="', 1)[-1].rstrip('"')
