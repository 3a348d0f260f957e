"""Building the microVM guest's agent, ``hack/guestagent`` (Go, static, standard library
only), once per source version and machine, for ``guest.py`` to put in the initramfs.

The agent serves exec and port sessions inside the guest (its protocol is in its
``main.go`` and ``agentmux.py``). It is built here rather than shipped because a
binary is no source: the cache key is a hash of the sources, so an edited agent is
rebuilt on the next boot. Standard library only: this module runs inside the shim.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "hack" / "guestagent"
GO_TIMEOUT = 600  # seconds for a first build on 2 busy cores


class BuildError(Exception):
    """The agent could not be built; the message says why (no Go, no source, an error)."""


def binary(cache: Path) -> Path:
    """The guest agent, built unless ``<cache>/guestagent/<hash>/vk-agent`` exists."""
    files = [*sorted(SOURCE.glob("*.go")), SOURCE / "go.mod"]
    if not (SOURCE / "go.mod").is_file():
        raise BuildError(f"build the guest agent: no source at {SOURCE}")
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files))
    built = cache / "guestagent" / digest.hexdigest()[:16] / "vk-agent"
    if built.is_file():
        return built
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if Path(p).is_file()), None
    )
    if go is None:
        raise BuildError("build the guest agent: go not found (Go 1.22+ builds hack/guestagent)")
    built.parent.mkdir(parents=True, exist_ok=True)
    partial = built.with_name(f".vk-agent.{os.getpid()}")
    env = {**os.environ, "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64", "GOFLAGS": ""}
    if "HOME" not in env:  # a daemon's environment: Go keeps its caches under the cache
        env.setdefault("GOCACHE", str(cache / "guestagent" / "go-build"))
        env.setdefault("GOPATH", str(cache / "guestagent" / "go"))
    argv = [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), "."]
    try:
        done = subprocess.run(
            argv,
            cwd=SOURCE,
            env=env,
            capture_output=True,
            text=True,
            timeout=GO_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"build the guest agent: go build took over {GO_TIMEOUT}s") from exc
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BuildError(f"build the guest agent: go build exited {done.returncode}: {tail}")
    partial.replace(built)
    return built
