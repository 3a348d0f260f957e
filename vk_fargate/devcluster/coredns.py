"""CoreDNS's static binary for the local stack's ``coredns`` image, built once per machine.

EKS runs CoreDNS as the cluster's DNS, and on a Fargate-only cluster it runs on Fargate
itself. No public registry is reachable here, so its image is made locally
(``images``) from a binary built from the Go module proxy by ``hack/coredns/build.sh``
(a wrapper module pinned to one CoreDNS release, ``CGO_ENABLED=0`` as upstream's
image), into ``<cache>/coredns/<version>``: never committed, built as the control plane
is (``binaries.run_build_script``: one build per machine, a lock, a log).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from vk_fargate import errors, settings
from vk_fargate.devcluster import binaries

VERSION = "v1.15.0"  # github.com/coredns/coredns in hack/coredns/go.mod
# The name upstream publishes it under (as kubeadm's manifests); the local registry
# mirrors registry.k8s.io, so pods pull it there under this very reference.
IMAGE = f"registry.k8s.io/coredns/coredns:{VERSION}"
REPOSITORY = "coredns/coredns"  # its path in the local registry
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "coredns" / "build.sh"
LOG_NAME = "coredns-build.log"


def default_dir(cache: Path) -> Path:
    """The versioned folder of the cache the binary is built into."""
    return cache / "coredns" / VERSION


def binary(cache: Path) -> Path | None:
    """The built binary, or None when it has not been built on this machine."""
    path = default_dir(cache) / "coredns"
    return path if os.access(path, os.X_OK) else None


def build(config: settings.Settings, *, log: Path) -> Path:
    """The binary, built first when missing (minutes, once per machine)."""
    folder = default_dir(config.cache)
    binaries.run_build_script(
        config,
        BUILD_SCRIPT,
        folder,
        what=f"CoreDNS {VERSION}",
        done=lambda: binary(config.cache) is not None,
        log=log,
    )
    return folder / "coredns"


def version_line(path: Path) -> str:
    """What ``coredns -version`` prints first (``CoreDNS-1.15.0``)."""
    done = subprocess.run(
        [str(path), "-version"], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise errors.BinariesError(f"run {path} -version", done.stderr.strip()[-400:])
    return done.stdout.splitlines()[0] if done.stdout else ""
