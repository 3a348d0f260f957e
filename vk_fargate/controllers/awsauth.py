"""The seed's "Not Ready" case: a Fargate node whose pod execution role is not mapped
in ``kube-system/aws-auth``.

On EKS, the kubelet in a Fargate microVM authenticates as the profile's pod execution
role; unless ``aws-auth``'s ``mapRoles`` maps that role into ``system:nodes``, the node
never becomes Ready. We read the ConfigMap periodically (``get`` only: the chart grants
no more) and tell the heartbeats which nodes to report NotReady, with a message that
names the role and the fix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from vk_fargate import errors, world
from vk_fargate.aws import iam
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.k8s import kube, pods

log = logging.getLogger(__name__)
NAMESPACE, NAME = "kube-system", "aws-auth"


class AwsAuth:
    def __init__(
        self,
        api: kube.Kube,
        state: world.World,
        profile_of: Callable[[str], fargate_profiles.Profile | None],
        *,
        every: float = 10.0,
    ) -> None:
        self.api = api
        self.world = state
        self.profile_of = profile_of
        self.every = every
        self.data: dict[str, str] | None = None
        self.known = asyncio.Event()  # set once the ConfigMap (or its absence) was read
        self._mapped: dict[str, bool] = {}  # role ARN -> mapped, for the current data

    async def run(self) -> None:
        while True:
            try:
                found = await pods.config_map(self.api, NAMESPACE, NAME)
                self.observe(found.get("data") or {})
            except errors.KubeError as exc:
                if exc.not_found:
                    self.observe(None)
                else:  # keep the last answer rather than flap every node
                    log.warning("cannot read %s/%s: %s", NAMESPACE, NAME, exc)
            await asyncio.sleep(self.every)

    def observe(self, data: dict[str, str] | None) -> None:
        if data != self.data or not self.known.is_set():
            self.data, self._mapped = data, {}
        self.known.set()

    def _maps(self, role: str) -> bool:
        if role not in self._mapped:
            self._mapped[role] = iam.aws_auth_maps_role(self.data, role)
        return self._mapped[role]

    def problem(self, node: kube.JSON) -> str | None:
        """Why ``node`` cannot be Ready because of aws-auth, or None."""
        if not self.known.is_set():
            return None
        annotations = node["metadata"].get("annotations") or {}
        pod = self.world.pods.get(annotations.get(fargate_nodes.POD_UID_ANNOTATION) or "")
        if pod is None:
            return None
        labels = pod["metadata"].get("labels") or {}
        profile = self.profile_of(labels.get(fargate_profiles.PROFILE_LABEL, ""))
        role = profile.pod_execution_role_arn if profile is not None else ""
        if not role or self._maps(role):
            return None
        where = f"{NAMESPACE}/{NAME}" if self.data is not None else f"{NAMESPACE}/{NAME} (absent)"
        return (
            f"pod execution role {role} of Fargate profile {profile.name if profile else ''} "
            f"is not mapped in {where} mapRoles with the group system:nodes, so this node "
            f"cannot authenticate; add it (username system:node:{{{{SessionName}}}}, groups "
            f"system:bootstrappers, system:nodes, system:node-proxier)"
        )
