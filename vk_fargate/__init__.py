"""vk-fargate: serverless pods for any Kubernetes cluster, the way AWS Fargate serves EKS.

Pods matched by a Fargate profile run one per microVM on a bare-metal fleet, each
behind a virtual node of its own. The package is layered (checked by import-linter):
entry points (``cli``, ``app``) > controllers, admission, kubelet, scheduler >
domain (``fargate``, ``fleet``) > adapters (``k8s``, ``aws``); ``devcluster`` is the
local control-plane harness used by the demo and the tests.
"""

__version__ = "0.1.0"
