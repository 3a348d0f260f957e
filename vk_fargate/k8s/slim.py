"""kubernetes_asyncio without the generated API classes and models it loads up front.

``import kubernetes_asyncio`` runs the package's ``__init__``, which imports
``kubernetes_asyncio.client``, whose ``__init__`` imports every generated API class and
model: about 850 modules, 61 MiB of a provider that is about 100 MiB at rest. The
provider never builds a model: it speaks JSON through ``ApiClient.call_api`` (``kube``)
and needs only ``ApiClient``, ``Configuration``, their own modules and the config
loaders.

``install`` registers ``kubernetes_asyncio``, ``kubernetes_asyncio.client`` and
``kubernetes_asyncio.client.models`` as packages whose ``__init__`` has not run, with
``ApiClient`` and ``Configuration`` in place. Their submodules import from their folders
as usual. The first name such a package is asked for and lacks (``client.CoreV1Api``,
``models.V1Pod``) runs its real ``__init__`` then, so code that wants the generated
classes (the API client's own deserializer, a test) gets them, later. Installed once
kubernetes_asyncio is already loaded, it changes nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

ROOT = "kubernetes_asyncio"
DEFERRED = (ROOT, f"{ROOT}.client", f"{ROOT}.client.models")


def install() -> None:
    """Defer the packages' ``__init__`` (a no-op when kubernetes_asyncio is loaded)."""
    if ROOT in sys.modules:
        return
    for name in DEFERRED:
        _deferred(name)
    client = sys.modules[f"{ROOT}.client"]
    api_client = importlib.import_module(f"{ROOT}.client.api_client")
    configuration = importlib.import_module(f"{ROOT}.client.configuration")
    # What ``from kubernetes_asyncio.client import ApiClient, Configuration`` (the
    # config loaders) asks for, without the rest of the package's names.
    client.__dict__.setdefault("ApiClient", api_client.ApiClient)
    client.__dict__.setdefault("Configuration", configuration.Configuration)


def _deferred(name: str) -> types.ModuleType:
    """Package ``name``, registered but not initialised: its ``__init__`` runs at the
    first name it lacks that is not a submodule."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def missing(attribute: str) -> Any:
        try:
            return importlib.import_module(f"{name}.{attribute}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{name}.{attribute}":
                raise
        del module.__dict__["__getattr__"]  # once: a name still lacking is then absent
        loader.exec_module(module)
        return getattr(module, attribute)

    module.__dict__["__getattr__"] = missing
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:  # as the import system binds a submodule it loads
        setattr(sys.modules[parent], child, module)
    return module
