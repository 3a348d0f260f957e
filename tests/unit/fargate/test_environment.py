"""Tests of container env resolution: values, expansion, refs, downward API, service links."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from vk_fargate.fargate import environment, sizing

JSON = dict[str, Any]
TEMPLATE = "fargate-ip-{private_ip_dashed}.us-east-1.compute.internal"
DEFAULT_SIZE = sizing.Size(2000, 4096)

MASTER = {
    "metadata": {"name": "kubernetes", "namespace": "default"},
    "spec": {
        "clusterIP": "10.96.0.1",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
    },
}
MASTER_ENV = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}
WEB = {
    "metadata": {"name": "my-web", "namespace": "shop"},
    "spec": {
        "clusterIP": "10.96.0.20",
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns-udp", "port": 53, "protocol": "UDP"},
        ],
    },
}
WEB_ENV = {
    "MY_WEB_SERVICE_HOST": "10.96.0.20",
    "MY_WEB_SERVICE_PORT": "80",
    "MY_WEB_SERVICE_PORT_HTTP": "80",
    "MY_WEB_SERVICE_PORT_DNS_UDP": "53",
    "MY_WEB_PORT": "tcp://10.96.0.20:80",
    "MY_WEB_PORT_80_TCP": "tcp://10.96.0.20:80",
    "MY_WEB_PORT_80_TCP_PROTO": "tcp",
    "MY_WEB_PORT_80_TCP_PORT": "80",
    "MY_WEB_PORT_80_TCP_ADDR": "10.96.0.20",
    "MY_WEB_PORT_53_UDP": "udp://10.96.0.20:53",
    "MY_WEB_PORT_53_UDP_PROTO": "udp",
    "MY_WEB_PORT_53_UDP_PORT": "53",
    "MY_WEB_PORT_53_UDP_ADDR": "10.96.0.20",
}
HEADLESS = {
    "metadata": {"name": "headless", "namespace": "shop"},
    "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sources(
    *,
    config_maps: dict[str, JSON | None] | None = None,
    secrets: dict[str, JSON | None] | None = None,
    services: list[JSON] | None = None,
    master: bool = False,
    size: sizing.Size = DEFAULT_SIZE,
) -> environment.Sources:
    return environment.Sources(
        config_maps=config_maps or {},
        secrets=secrets or {},
        services=services or [],
        master_services=[MASTER] if master else [],
        node_name_template=TEMPLATE,
        size=size,
    )


def pod(**spec: Any) -> JSON:
    return {
        "metadata": {
            "name": "web-0",
            "namespace": "shop",
            "uid": "11111111-2222-3333-4444-555555555555",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"example.com/owner": "team-a"},
        },
        "spec": {"serviceAccountName": "web-sa", **spec},
    }


def container(
    env: list[JSON] | None = None, env_from: list[JSON] | None = None, **extra: Any
) -> JSON:
    c: JSON = {"name": "app", "image": "nginx", **extra}
    if env is not None:
        c["env"] = env
    if env_from is not None:
        c["envFrom"] = env_from
    return c


def resolved(
    c: JSON, src: environment.Sources | None = None, p: JSON | None = None
) -> dict[str, tuple[str, bool]]:
    out = environment.resolve(p or pod(), c, src or sources())
    names = [v.name for v in out]
    assert len(names) == len(set(names)), "each variable appears once"
    return {v.name: (v.value, v.expand) for v in out}


def values(
    c: JSON, src: environment.Sources | None = None, p: JSON | None = None
) -> dict[str, str]:
    return {k: v for k, (v, _) in resolved(c, src, p).items()}


def field(name: str, path: str) -> JSON:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def resource(name: str, res: str, divisor: str | None = None) -> JSON:
    ref: JSON = {"resource": res}
    if divisor is not None:
        ref["divisor"] = divisor
    return {"name": name, "valueFrom": {"resourceFieldRef": ref}}


def cm_key(name: str, cm: str, key: str, optional: bool | None = None) -> JSON:
    ref: JSON = {"name": cm, "key": key}
    if optional is not None:
        ref["optional"] = optional
    return {"name": name, "valueFrom": {"configMapKeyRef": ref}}


def secret_key(name: str, secret: str, key: str, optional: bool | None = None) -> JSON:
    ref: JSON = {"name": secret, "key": key}
    if optional is not None:
        ref["optional"] = optional
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


# --- plain values and $(VAR) expansion -------------------------------------------------


def test_no_env_and_no_services_is_empty() -> None:
    assert environment.resolve(pod(), container(), sources()) == []


def test_plain_values_keep_their_order_and_are_not_expanded() -> None:
    out = environment.resolve(
        pod(), container([{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]), sources()
    )
    assert [(v.name, v.value, v.expand) for v in out] == [("B", "2", False), ("A", "1", False)]


def test_a_var_without_value_is_empty() -> None:
    assert values(container([{"name": "EMPTY"}])) == {"EMPTY": ""}


def test_earlier_vars_are_expanded() -> None:
    env = [
        {"name": "HOST", "value": "db"},
        {"name": "PORT", "value": "5432"},
        {"name": "URL", "value": "postgres://$(HOST):$(PORT)/app"},
    ]
    assert values(container(env))["URL"] == "postgres://db:5432/app"


def test_later_vars_are_not_expanded() -> None:
    env = [{"name": "URL", "value": "http://$(HOST)"}, {"name": "HOST", "value": "db"}]
    assert values(container(env))["URL"] == "http://$(HOST)"


def test_unknown_references_are_kept_verbatim() -> None:
    env = [{"name": "A", "value": "x-$(MISSING)-y $(also missing"}]
    assert values(container(env))["A"] == "x-$(MISSING)-y $(also missing"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$$(HOST)", "$(HOST)"),
        ("a$$b", "a$b"),
        ("$$$(HOST)", "$db"),
        ("price: $5", "price: $5"),
    ],
)
def test_double_dollar_escapes(value: str, expected: str) -> None:
    env = [{"name": "HOST", "value": "db"}, {"name": "V", "value": value}]
    assert values(container(env))["V"] == expected


def test_expansion_sees_envfrom_and_service_vars() -> None:
    env = [{"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST)/$(MODE)"}]
    src = sources(config_maps={"cfg": {"data": {"MODE": "prod"}}}, master=True)
    out = values(container(env, [{"configMapRef": {"name": "cfg"}}]), src)
    assert out["API"] == "https://10.96.0.1/prod"


# --- ConfigMap and Secret key refs ------------------------------------------------------


def test_config_map_and_secret_keys() -> None:
    src = sources(
        config_maps={"cfg": {"data": {"mode": "prod"}}},
        secrets={"creds": {"data": {"password": b64("s3cr3t é")}}},
    )
    env = [cm_key("MODE", "cfg", "mode"), secret_key("PASSWORD", "creds", "password")]
    assert resolved(container(env), src) == {
        "MODE": ("prod", False),
        "PASSWORD": ("s3cr3t é", False),
    }


@pytest.mark.parametrize("ref", [cm_key, secret_key])
@pytest.mark.parametrize("store", [{}, {"x": None}, {"x": {"data": {"other": b64("v")}}}])
def test_optional_missing_refs_are_left_out(ref: Any, store: dict[str, JSON | None]) -> None:
    src = sources(config_maps=store, secrets=store)
    env = [{"name": "BEFORE", "value": "1"}, ref("V", "x", "k", optional=True)]
    assert values(container(env), src) == {"BEFORE": "1"}


@pytest.mark.parametrize("optional", [None, False])
def test_missing_config_map_is_kubelets_error(optional: bool | None) -> None:
    with pytest.raises(environment.ConfigError) as info:
        resolved(container([cm_key("V", "x", "k", optional)]), sources(config_maps={"x": None}))
    assert str(info.value) == 'configmap "x" not found'


def test_missing_config_map_absent_from_the_sources_is_kubelets_error() -> None:
    with pytest.raises(environment.ConfigError) as info:
        resolved(container([cm_key("V", "x", "k")]))
    assert str(info.value) == 'configmap "x" not found'


def test_missing_config_map_key_is_a_config_error_naming_key_and_map() -> None:
    src = sources(config_maps={"x": {"data": {"other": "v"}}})
    with pytest.raises(environment.ConfigError) as info:
        resolved(container([cm_key("V", "x", "k", optional=False)]), src)
    message = str(info.value)
    assert message.startswith("couldn't find key k in ")
    assert message.endswith(" shop/x")


@pytest.mark.parametrize("optional", [None, False])
def test_missing_secret_is_kubelets_error(optional: bool | None) -> None:
    with pytest.raises(environment.ConfigError) as info:
        resolved(container([secret_key("V", "s", "k", optional)]), sources(secrets={"s": None}))
    assert str(info.value) == 'secret "s" not found'


def test_missing_secret_key_is_kubelets_error() -> None:
    src = sources(secrets={"s": {"data": {"other": b64("v")}}})
    with pytest.raises(environment.ConfigError) as info:
        resolved(container([secret_key("V", "s", "k")]), src)
    assert str(info.value) == "couldn't find key k in Secret shop/s"


def test_a_config_map_without_data_has_no_keys() -> None:
    with pytest.raises(environment.ConfigError, match="couldn't find key k in"):
        resolved(container([cm_key("V", "x", "k")]), sources(config_maps={"x": {}}))


# --- envFrom ----------------------------------------------------------------------------


def test_env_from_config_maps_and_secrets_with_prefix() -> None:
    src = sources(
        config_maps={"cfg": {"data": {"MODE": "prod", "LEVEL": "debug"}}},
        secrets={"creds": {"data": {"USER": b64("admin"), "PASS": b64("hunter2")}}},
    )
    env_from: list[JSON] = [
        {"configMapRef": {"name": "cfg"}},
        {"prefix": "DB_", "secretRef": {"name": "creds"}},
    ]
    assert resolved(container(env_from=env_from), src) == {
        "MODE": ("prod", False),
        "LEVEL": ("debug", False),
        "DB_USER": ("admin", False),
        "DB_PASS": ("hunter2", False),
    }


@pytest.mark.parametrize("kind", ["configMapRef", "secretRef"])
def test_env_from_optional_missing_is_skipped(kind: str) -> None:
    env_from = [{kind: {"name": "gone", "optional": True}}]
    env = [{"name": "A", "value": "1"}]
    assert values(container(env, env_from)) == {"A": "1"}


@pytest.mark.parametrize(
    ("kind", "message"),
    [("configMapRef", 'configmap "gone" not found'), ("secretRef", 'secret "gone" not found')],
)
def test_env_from_missing_is_kubelets_error(kind: str, message: str) -> None:
    for ref in ({"name": "gone"}, {"name": "gone", "optional": False}):
        with pytest.raises(environment.ConfigError) as info:
            resolved(container(env_from=[{kind: ref}]))
        assert str(info.value) == message


def test_env_overrides_env_from_and_later_env_from_overrides_earlier() -> None:
    src = sources(
        config_maps={"a": {"data": {"X": "a", "Y": "a"}}, "b": {"data": {"Y": "b", "Z": "b"}}}
    )
    env_from = [{"configMapRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}]
    env = [{"name": "Z", "value": "env"}]
    assert values(container(env, env_from), src) == {"X": "a", "Y": "b", "Z": "env"}


def test_later_env_entries_override_earlier_ones() -> None:
    env = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
    assert values(container(env)) == {"A": "2"}


def test_an_optional_missing_ref_keeps_the_env_from_value() -> None:
    src = sources(config_maps={"cfg": {"data": {"MODE": "prod"}}})
    env = [cm_key("MODE", "gone", "mode", optional=True)]
    assert values(container(env, [{"configMapRef": {"name": "cfg"}}]), src) == {"MODE": "prod"}


# --- downward API -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "web-0"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "11111111-2222-3333-4444-555555555555"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['missing']", ""),
        ("metadata.annotations['example.com/owner']", "team-a"),
        ("spec.serviceAccountName", "web-sa"),
    ],
)
def test_field_refs_resolved_now(path: str, value: str) -> None:
    assert resolved(container([field("V", path)])) == {"V": (value, False)}


@pytest.mark.parametrize("path", ["status.podIP", "status.hostIP", "status.podIPs"])
def test_ip_field_refs_are_expanded_once_placed(path: str) -> None:
    out = environment.resolve(pod(), container([field("IP", path)]), sources())
    assert [(v.name, v.value, v.expand) for v in out] == [("IP", "{private_ip}", True)]
    assert out[0].rendered("10.0.1.2") == "10.0.1.2"


def test_node_name_field_ref_is_the_node_name_template() -> None:
    out = environment.resolve(pod(), container([field("NODE", "spec.nodeName")]), sources())
    assert [(v.name, v.value, v.expand) for v in out] == [("NODE", TEMPLATE, True)]
    assert out[0].rendered("10.0.1.2") == "fargate-ip-10-0-1-2.us-east-1.compute.internal"


def test_a_var_referencing_an_expanded_var_is_expanded_too() -> None:
    env = [
        field("POD_IP", "status.podIP"),
        {"name": "PLAIN", "value": "x"},
        {"name": "URL", "value": "http://$(POD_IP):8080/$(PLAIN)"},
        {"name": "OTHER", "value": "$(PLAIN)"},
    ]
    out = {v.name: v for v in environment.resolve(pod(), container(env), sources())}
    assert (out["URL"].value, out["URL"].expand) == ("http://{private_ip}:8080/x", True)
    assert out["URL"].rendered("10.0.1.2") == "http://10.0.1.2:8080/x"
    assert (out["OTHER"].value, out["OTHER"].expand) == ("x", False)
    assert (out["PLAIN"].value, out["PLAIN"].expand) == ("x", False)


def test_secret_values_and_what_expands_them_are_marked_secret() -> None:
    env = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}},
        {"name": "URL", "value": "db://u:$(PASSWORD)@db"},
        {"name": "PLAIN", "value": "x"},
        {  # optional and missing: the envFrom Secret's value stays, and stays secret
            "name": "S_pw",
            "valueFrom": {"configMapKeyRef": {"name": "nope", "optional": True, "key": "k"}},
        },
    ]
    stores = sources(
        secrets={"creds": {"data": {"pw": base64.b64encode(b"s3cret").decode()}}},
    )
    secret_from = container(env, env_from=[{"secretRef": {"name": "creds"}, "prefix": "S_"}])
    out = {v.name: v for v in environment.resolve(pod(), secret_from, stores)}
    assert {n for n, v in out.items() if v.secret} == {"PASSWORD", "URL", "S_pw"}
    assert out["URL"].value == "db://u:s3cret@db"
    assert "s3cret" not in repr(out["URL"]), "values stay out of logs"


def test_an_unsupported_field_ref_is_a_config_error() -> None:
    with pytest.raises(environment.ConfigError, match=r"status\.phase"):
        resolved(container([field("V", "status.phase")]))


# --- resourceFieldRef -------------------------------------------------------------------

LIMITED = {"requests": {"cpu": "250m"}, "limits": {"cpu": "1500m", "memory": "1Gi"}}


@pytest.mark.parametrize(
    ("res", "divisor", "value"),
    [
        ("limits.cpu", None, "2"),  # 1.5 cores rounded up
        ("limits.cpu", "1", "2"),
        ("limits.cpu", "1m", "1500"),
        ("limits.cpu", "100m", "15"),
        ("limits.memory", None, str(2**30)),
        ("limits.memory", "1Mi", "1024"),
        ("limits.memory", "1Gi", "1"),
        ("limits.memory", "1M", "1074"),  # 1073.74 rounded up
        ("requests.cpu", "1m", "250"),
        ("requests.cpu", None, "1"),
        ("requests.memory", "1Mi", "1024"),  # no request: the limit stands in
    ],
)
def test_resource_field_refs_with_limits(res: str, divisor: str | None, value: str) -> None:
    c = container([resource("V", res, divisor)], resources=LIMITED)
    assert resolved(c) == {"V": (value, False)}


@pytest.mark.parametrize(
    ("res", "divisor", "value"),
    [
        ("limits.cpu", None, "2"),
        ("limits.cpu", "1m", "2000"),
        ("limits.memory", "1Mi", "4096"),
        ("limits.memory", None, str(4096 * 2**20)),
        ("limits.ephemeral-storage", "1Gi", "30"),
    ],
)
def test_resource_field_refs_default_to_the_fargate_size(
    res: str, divisor: str | None, value: str
) -> None:
    src = sources(size=sizing.Size(2000, 4096, 30))
    assert resolved(container([resource("V", res, divisor)]), src) == {"V": (value, False)}


def test_resource_field_ref_defaults_follow_the_size_given() -> None:
    small = sources(size=sizing.Size(250, 512))
    c = container([resource("CPU", "limits.cpu", "1m"), resource("MEM", "limits.memory", "1Mi")])
    assert values(c, small) == {"CPU": "250", "MEM": "512"}


def test_an_unsupported_resource_is_a_config_error() -> None:
    with pytest.raises(environment.ConfigError, match=r"limits\.nvidia\.com/gpu"):
        resolved(container([resource("V", "limits.nvidia.com/gpu")]))


# --- service links ----------------------------------------------------------------------


def test_service_links_and_master_service_vars() -> None:
    src = sources(services=[WEB, HEADLESS], master=True)
    assert values(container(), src) == {**WEB_ENV, **MASTER_ENV}


@pytest.mark.parametrize("enable", [None, True])
def test_service_links_are_on_by_default(enable: bool | None) -> None:
    p = pod() if enable is None else pod(enableServiceLinks=enable)
    out = values(container(), sources(services=[WEB], master=True), p)
    assert out["MY_WEB_SERVICE_HOST"] == "10.96.0.20"


def test_without_service_links_only_the_master_service_remains() -> None:
    src = sources(services=[WEB], master=True)
    assert values(container(), src, pod(enableServiceLinks=False)) == MASTER_ENV


def test_a_service_without_ports_only_gets_its_host() -> None:
    bare = {"metadata": {"name": "bare"}, "spec": {"clusterIP": "10.96.0.30"}}
    assert values(container(), sources(services=[bare])) == {"BARE_SERVICE_HOST": "10.96.0.30"}


def test_unnamed_port_without_protocol_defaults_to_tcp() -> None:
    svc = {
        "metadata": {"name": "api"},
        "spec": {"clusterIP": "10.96.0.40", "ports": [{"port": 8080}]},
    }
    assert values(container(), sources(services=[svc])) == {
        "API_SERVICE_HOST": "10.96.0.40",
        "API_SERVICE_PORT": "8080",
        "API_PORT": "tcp://10.96.0.40:8080",
        "API_PORT_8080_TCP": "tcp://10.96.0.40:8080",
        "API_PORT_8080_TCP_PROTO": "tcp",
        "API_PORT_8080_TCP_PORT": "8080",
        "API_PORT_8080_TCP_ADDR": "10.96.0.40",
    }


def test_env_from_and_env_override_service_vars() -> None:
    src = sources(
        services=[WEB], master=True, config_maps={"cfg": {"data": {"MY_WEB_SERVICE_HOST": "cm"}}}
    )
    env = [{"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]
    out = values(container(env, [{"configMapRef": {"name": "cfg"}}]), src)
    assert out["MY_WEB_SERVICE_HOST"] == "cm"
    assert out["KUBERNETES_SERVICE_PORT"] == "6443"
    assert out["MY_WEB_SERVICE_PORT"] == "80"
