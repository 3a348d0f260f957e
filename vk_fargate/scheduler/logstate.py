"""EKS's ``Logging`` annotation of a pod being placed, and an event saying why when its
logs will not be shipped.

``LoggingEnabled`` only when the pod's lines will really reach CloudWatch: the
``aws-observability/aws-logging`` ConfigMap exists, is valid, has a CloudWatch output,
and an AWS backend is configured (the log router ships them).
"""

from __future__ import annotations

from vk_fargate import errors
from vk_fargate.aws import logconfig, logfilter
from vk_fargate.k8s import events, kube, pods

ANNOTATION = "Logging"
SCHEDULER = "fargate-scheduler"


async def decide(
    api: kube.Kube, recorder: events.Recorder, pod: kube.JSON, *, aws_backend: bool
) -> str:
    """The pod's ``Logging`` annotation's value."""
    try:
        found = await pods.config_map(api, logconfig.NAMESPACE, logconfig.CONFIG_MAP)
    except errors.KubeError as exc:
        if not exc.not_found:
            raise
        return await _disabled(recorder, pod, "LOGGING_CONFIGMAP_NOT_FOUND", "")
    try:
        config = logconfig.parse(found.get("data") or {})
    except errors.LoggingConfigInvalid as exc:
        return await _disabled(recorder, pod, "LOGGING_CONFIGMAP_INVALID", str(exc))
    if not config.outputs:
        return await _disabled(
            recorder,
            pod,
            "NO_CLOUDWATCH_OUTPUT",
            "vk-fargate ships to cloudwatch/cloudwatch_logs outputs only; not shipped: "
            + ", ".join(config.unshipped_outputs),
        )
    if not aws_backend:
        return await _disabled(
            recorder,
            pod,
            "AWS_BACKEND_DISABLED",
            "the aws-logging ConfigMap is valid but the provider has no AWS backend "
            "(set VK_FARGATE_AWS_ENABLED=true)",
        )
    ignored = logfilter.not_applied(config.parsed_filters)
    if ignored:
        await recorder.record(
            pod,
            "LoggingFiltersNotApplied",
            "vk-fargate applies grep filters on the log key only; lines pass these "
            f"filters.conf filters unfiltered: {', '.join(ignored)}",
            warning=True,
            component=SCHEDULER,
        )
    return "LoggingEnabled"


async def _disabled(recorder: events.Recorder, pod: kube.JSON, code: str, detail: str) -> str:
    await recorder.record(
        pod,
        "LoggingDisabled",
        f"{code}: {detail}" if detail else code,
        warning=True,
        component=SCHEDULER,
    )
    return f"LoggingDisabled: {code}"
