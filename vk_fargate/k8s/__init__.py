"""The Kubernetes adapter: the only package that imports kubernetes_asyncio.

Everything above it talks to the API server through these modules, so the client
library's quirks are handled once, here.
"""

from vk_fargate.k8s import slim

slim.install()  # before any of these modules imports kubernetes_asyncio
