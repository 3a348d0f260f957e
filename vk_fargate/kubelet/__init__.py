"""The kubelet HTTP API of the virtual nodes: what `kubectl logs` reaches through the
API server.

The API server dials a node's kubelet for container logs; a virtual node has no real
kubelet, so this package serves that API over TLS on the provider's behalf, with the
kubelet's authentication (client certificates, TokenReview) and authorization
(SubjectAccessReview on ``nodes/<name>``), for every virtual node the provider runs.
"""
