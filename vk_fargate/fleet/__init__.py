"""The fleet API as the provider sees it: its models (mirroring ``openapi.yaml``, the
source of truth) and an async client. The reference daemon is ``vk_fargate.fleetd``.
"""
