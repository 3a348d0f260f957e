"""Admission: the webhooks that make an ordinary cluster behave like EKS with Fargate.

On EKS a mutating webhook in the control plane sends pods that match a Fargate profile
to ``fargate-scheduler``; users change nothing in their manifests. This package is that
webhook for any cluster (``mutation`` decides, pure; ``server`` answers the API server
over HTTPS; ``registration`` tells the API server where to call), plus the validating
webhook that keeps a cluster at EKS's limit of 10 profiles.
"""
