"""`vk-fargate profile create|get|delete`, in the spirit of eksctl's fargateprofile
commands: the same fields, the same `-o yaml` shape, progress lines with timestamps.
Like EKS, creating a profile with a pod execution role maps that role in aws-auth.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from pathlib import Path
from typing import Any

import yaml

from vk_fargate import errors
from vk_fargate.aws import iam
from vk_fargate.fargate import profiles as fargate_profiles
from vk_fargate.k8s import client, kube
from vk_fargate.k8s import profiles as k8s_profiles

INFO = "\u2139"  # eksctl's information mark
ACTIVE_WAIT = 60.0  # seconds `create` waits for the provider to activate the profile
AWS_AUTH = ("kube-system", "aws-auth")


def _say(mark: str, text: str) -> None:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} [{mark}]  {text}", flush=True)


def parse_labels(text: str | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for term in filter(None, (text or "").split(",")):
        key, sep, value = term.partition("=")
        if not sep or not key.strip():
            raise errors.ConfigError(f"--labels takes key=value[,key=value], not {term!r}")
        labels[key.strip()] = value.strip()
    return labels


def _eksctl_view(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    view: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if spec.get("podExecutionRoleARN"):
        view["podExecutionRoleARN"] = spec["podExecutionRoleARN"]
    view["selectors"] = [
        {"namespace": s["namespace"], **({"labels": s["labels"]} if s.get("labels") else {})}
        for s in spec.get("selectors") or []
    ]
    view["status"] = (obj.get("status") or {}).get("status", "CREATING")
    if spec.get("subnets"):
        view["subnets"] = spec["subnets"]
    return view


async def _api(kubeconfig: Path | None) -> kube.Kube:
    return kube.Kube(await client.connect(kubeconfig))


async def create(
    kubeconfig: Path | None,
    *,
    name: str,
    namespace: str,
    labels: str | None,
    subnets: str | None,
    role: str | None,
    cluster: str,
) -> int:
    selector: dict[str, Any] = {"namespace": namespace}
    if labels:
        selector["labels"] = parse_labels(labels)
    spec: dict[str, Any] = {"selectors": [selector]}
    if subnets:
        spec["subnets"] = [s.strip() for s in subnets.split(",") if s.strip()]
    if role:
        spec["podExecutionRoleARN"] = role
    fargate_profiles.Profile.model_validate({"name": name, **spec})  # clear errors, early
    api = await _api(kubeconfig)
    try:
        _say(INFO, f'creating Fargate profile "{name}" on cluster "{cluster}"')
        await k8s_profiles.ensure_crd(api)
        await k8s_profiles.create(api, name, spec)
        deadline = time.monotonic() + ACTIVE_WAIT
        status = None
        while time.monotonic() < deadline:
            current = await k8s_profiles.get(api, name)
            status = (current.get("status") or {}).get("status")
            if status in ("ACTIVE", "FAILED"):
                break
            await asyncio.sleep(0.5)
        if status == "ACTIVE":
            _say("✔", f'created Fargate profile "{name}" on cluster "{cluster}"')
            if role:
                await _map_role(api, role)
            return 0
        if status == "FAILED":
            message = (current.get("status") or {}).get("message", "")
            _say("✖", f'Fargate profile "{name}" failed: {message}')
            return 1
        _say("!", f'created Fargate profile "{name}"; no provider has activated it yet')
        return 0
    except errors.KubeError as exc:
        _say("✖", f'could not create Fargate profile "{name}": {exc.message}')
        return 1
    finally:
        await api.close()


async def _map_role(api: kube.Kube, role: str) -> None:
    """Map the pod execution role in kube-system/aws-auth, as EKS does for a new profile
    (without it the profile's nodes stay NotReady: the seed's troubleshooting case)."""
    path = f"/api/v1/namespaces/{AWS_AUTH[0]}/configmaps"
    try:
        current: dict[str, Any] | None = await api.get(f"{path}/{AWS_AUTH[1]}")
    except errors.KubeError as exc:
        if not exc.not_found:
            raise
        current = None
    data = (current or {}).get("data") or {}
    try:
        wanted = iam.with_role_mapped(data, role)
    except ValueError as exc:
        _say("!", f"could not map {role} in kube-system/aws-auth: {exc}")
        return
    if wanted == data:
        return
    if current is None:
        body = {"metadata": {"name": AWS_AUTH[1], "namespace": AWS_AUTH[0]}, "data": wanted}
        await api.create(path, body)
    else:
        version = current["metadata"]["resourceVersion"]
        patch = {"metadata": {"resourceVersion": version}, "data": wanted}
        await api.patch(f"{path}/{AWS_AUTH[1]}", patch, kind=kube.MERGE_PATCH)
    _say(INFO, f"mapped pod execution role {role} in kube-system/aws-auth (group system:nodes)")


async def get(kubeconfig: Path | None, *, output: str) -> int:
    api = await _api(kubeconfig)
    try:
        items = sorted(await k8s_profiles.list_all(api), key=lambda o: o["metadata"]["name"])
    except errors.KubeError as exc:
        if exc.not_found:
            items = []
        else:
            raise
    finally:
        await api.close()
    views = [_eksctl_view(o) for o in items]
    if output == "yaml":
        print(yaml.safe_dump(views, sort_keys=False).rstrip() if views else "[]")
    elif output == "json":
        print(json.dumps(views, indent=2))
    else:
        print(f"{'NAME':<20} {'SELECTOR_NAMESPACE':<24} {'SELECTOR_LABELS':<24} {'STATUS':<10}")
        for view in views:
            for selector in view["selectors"]:
                labels = ",".join(f"{k}={v}" for k, v in (selector.get("labels") or {}).items())
                print(
                    f"{view['name']:<20} {selector['namespace']:<24} {labels or '<none>':<24} "
                    f"{view['status']:<10}"
                )
    return 0


async def delete(kubeconfig: Path | None, *, name: str, cluster: str, wait: bool = True) -> int:
    api = await _api(kubeconfig)
    try:
        _say(INFO, f'deleting Fargate profile "{name}" (its pods are stopped first)')
        await k8s_profiles.delete(api, name)
        deadline = time.monotonic() + ACTIVE_WAIT * 2
        while wait and time.monotonic() < deadline:
            try:
                await k8s_profiles.get(api, name)
            except errors.KubeError as exc:
                if exc.not_found:
                    _say("✔", f'deleted Fargate profile "{name}" on cluster "{cluster}"')
                    return 0
                raise
            await asyncio.sleep(0.5)
        _say("!", f'Fargate profile "{name}" is still deleting')
        return 0
    except errors.KubeError as exc:
        _say("✖", f'could not delete Fargate profile "{name}": {exc.message}')
        return 1
    finally:
        await api.close()
