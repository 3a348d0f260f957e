"""Profiles from the provider's config file, for clusters that may not install CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vk_fargate import app, errors


def test_profiles_file_loads_in_eksctl_shape(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(
        "- name: fargate\n"
        "  podExecutionRoleARN: arn:aws:iam::112233:role/pods\n"
        "  selectors:\n  - namespace: fargate-workload\n    labels: {tier: web}\n"
        "  subnets: [subnet-private1]\n"
    )
    [profile] = app.load_profiles(path)
    assert profile.name == "fargate"
    assert profile.pod_execution_role_arn == "arn:aws:iam::112233:role/pods"
    assert profile.selectors[0].labels == {"tier": "web"}
    assert app.load_profiles(None) == []


@pytest.mark.parametrize(
    "text",
    [
        "- name: fargate\n  selectors: []\n",  # at least one selector
        "- name: Not_A_Name\n  selectors: [{namespace: a}]\n",
        "- name: x\n  selectors: [{namespace: a}, {namespace: b}, {namespace: c}, {namespace: d},"
        " {namespace: e}, {namespace: f}]\n",  # at most five
        "- name: x\n  selectors: [{namespace: a, labels: {a: '1', b: '2', c: '3', d: '4', "
        "e: '5', f: '6'}}]\n",  # at most five labels
        "{not: a list}",
        "- [unbalanced",
    ],
)
def test_a_bad_profiles_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    with pytest.raises(errors.ConfigError, match="invalid profiles file"):
        app.load_profiles(path)
