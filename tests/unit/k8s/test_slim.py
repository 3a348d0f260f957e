"""The provider loads kubernetes_asyncio's client and config loaders, not its generated
API classes and models, and code that asks for those still gets them.

Each case runs in a fresh interpreter: this one has long loaded the whole package."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_provider_loads_no_generated_classes() -> None:
    out = _run(
        """
        import sys
        import vk_fargate.app
        loaded = [m for m in sys.modules if m.startswith("kubernetes_asyncio")]
        print(len(loaded), "kubernetes_asyncio.client.api.core_v1_api" in sys.modules,
              "kubernetes_asyncio.client.models.v1_pod" in sys.modules)
        """
    )
    count, api, model = out.split()
    assert (api, model) == ("False", "False")
    assert int(count) < 30  # the whole package is about 850 modules


@pytest.mark.parametrize(
    "use",
    [
        "from kubernetes_asyncio import client; print(client.CoreV1Api.__name__)",
        "from kubernetes_asyncio.client import models; print(models.V1Pod.__name__)",
        "import kubernetes_asyncio; print(kubernetes_asyncio.client.V1Pod.__name__)",
        "from kubernetes_asyncio import watch; print(watch.Watch.__name__)",
    ],
)
def test_generated_classes_still_load_when_asked_for(use: str) -> None:
    assert _run(f"import vk_fargate.k8s.kube\n{use}") in ("CoreV1Api", "V1Pod", "Watch")


def test_a_missing_name_is_an_attribute_error() -> None:
    out = _run(
        """
        import vk_fargate.k8s.kube
        import kubernetes_asyncio.client
        try:
            kubernetes_asyncio.client.NoSuchApi
        except AttributeError as exc:
            print(exc)
        """
    )
    assert out == "module 'kubernetes_asyncio.client' has no attribute 'NoSuchApi'"
