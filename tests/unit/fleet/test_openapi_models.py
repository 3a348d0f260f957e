"""Proves vk_fargate/fleet/models.py and openapi.yaml agree, schema by schema, field by field."""

from __future__ import annotations

import copy
import datetime
import types
import typing
from importlib import resources
from typing import Any

import pydantic
import pytest
import yaml

from vk_fargate import errors
from vk_fargate.fleet import models

SPEC: dict[str, Any] = yaml.safe_load(
    resources.files("vk_fargate.fleet").joinpath("openapi.yaml").read_text()
)
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]
# Object schemas that must each have a model of the same name (and no other models exist).
MODELLED = [
    "Error",
    "Resources",
    "Host",
    "HostList",
    "HostAction",
    "EnvVar",
    "SecurityContext",
    "VolumeFile",
    "FileSet",
    "EmptyDir",
    "Volume",
    "VolumeMount",
    "ServicePort",
    "ServiceTable",
    "DNSConfig",
    "HostAlias",
    "ServiceRoute",
    "ExecAction",
    "HTTPHeader",
    "HTTPGetAction",
    "TCPSocketAction",
    "GRPCAction",
    "Probe",
    "SleepAction",
    "LifecycleHandler",
    "Container",
    "MicroVMSpec",
    "Termination",
    "PullResult",
    "ContainerStatus",
    "MicroVMStatus",
    "MicroVM",
    "MicroVMList",
    "CPUStats",
    "MemoryStats",
    "ContainerStats",
    "NetworkStats",
    "MicroVMStats",
    "MaintenanceNotice",
    "ContainerEvent",
    "Event",
]
# Schema keywords and the pydantic constraint each corresponds to.
KEYWORDS = {
    "minimum": "ge",
    "maximum": "le",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_length",
    "maxItems": "max_length",
    "pattern": "pattern",
}
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


# The two sides, reduced to the same vocabulary.


def _target(prop: dict[str, Any], schemas: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(name, schema) of what a property refers to; name is None for an inline schema."""
    if "allOf" in prop:
        assert len(prop["allOf"]) == 1, prop
        return _target(prop["allOf"][0], schemas)
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return name, schemas[name]
    return None, prop


def schema_type(prop: dict[str, Any], schemas: dict[str, Any]) -> str:
    """A property's type as text: ``list[Container]``, ``Literal['a', 'b'] | None``, ..."""
    nullable = prop.get("nullable", False)
    name, target = _target(prop, schemas)
    if name is not None and target.get("type") == "object":
        text = name
    elif "enum" in target:
        text = "Literal[" + ", ".join(repr(v) for v in sorted(target["enum"])) + "]"
    elif target.get("type") == "string" and target.get("format") == "date-time":
        text = "datetime"
    elif target.get("type") == "array":
        text = f"list[{schema_type(target['items'], schemas)}]"
    elif target.get("type") == "object" and isinstance(target.get("additionalProperties"), dict):
        text = f"dict[string, {schema_type(target['additionalProperties'], schemas)}]"
    else:
        text = target["type"]
    return f"{text} | None" if nullable else text


def model_type(annotation: Any) -> str:
    """The same text for a model field's annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return model_type(args[0])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        assert len(rest) == 1 and len(args) == 2, f"only X | None is modelled: {annotation}"
        return f"{model_type(rest[0])} | None"
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(v) for v in sorted(args)) + "]"
    if origin is list:
        return f"list[{model_type(args[0])}]"
    if origin is dict:
        return f"dict[{model_type(args[0])}, {model_type(args[1])}]"
    if annotation is datetime.datetime:
        return "datetime"
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation.__name__
    return SCALARS[annotation]


def schema_constraints(prop: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """minimum/maximum/length/pattern of a property, as pydantic names them."""
    name, target = _target(prop, schemas)
    source = prop if name is not None and target.get("type") == "object" else target
    return {KEYWORDS[k]: v for k, v in source.items() if k in KEYWORDS}


def model_constraints(field: pydantic.fields.FieldInfo) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in field.metadata:
        for attribute in ("ge", "le", "gt", "lt", "min_length", "max_length", "pattern"):
            value = getattr(item, attribute, None)
            if value is not None:
                found[attribute] = value
    return found


def problems(
    schema_name: str, model: type[pydantic.BaseModel], schemas: dict[str, Any]
) -> list[str]:
    """Every way ``model`` differs from the schema ``schema_name``; empty when they agree."""
    schema = schemas[schema_name]
    props: dict[str, Any] = schema.get("properties", {})
    fields = model.model_fields
    found = []

    def differ(what: str, in_schema: Any, in_model: Any) -> None:
        if in_schema != in_model:
            found.append(f"{schema_name}.{what}: schema {in_schema!r} != model {in_model!r}")

    differ("properties", set(props), set(fields))
    differ(
        "required",
        set(schema.get("required", [])),
        {n for n, f in fields.items() if f.is_required()},
    )
    differ(
        "additionalProperties: false",
        schema.get("additionalProperties") is False,
        model.model_config.get("extra") == "forbid",
    )
    for name in sorted(set(props) & set(fields)):
        prop, field = props[name], fields[name]
        differ(f"{name} type", schema_type(prop, schemas), model_type(field.annotation))
        differ(f"{name} constraints", schema_constraints(prop, schemas), model_constraints(field))
        if field.is_required():
            differ(f"{name} default", prop.get("default"), None)
        elif "default" in prop:
            differ(f"{name} default", prop["default"], field.get_default(call_default_factory=True))
        else:  # optional without a documented default: null, and the schema must allow it
            differ(f"{name} default", None, field.get_default(call_default_factory=True))
            differ(f"{name} nullable", True, prop.get("nullable", False))
    return found


# The real thing


def test_every_object_schema_has_a_model_and_every_model_a_schema() -> None:
    object_schemas = {n for n, s in SCHEMAS.items() if s.get("type") == "object"}
    model_classes = {
        name
        for name, value in vars(models).items()
        if isinstance(value, type)
        and issubclass(value, pydantic.BaseModel)
        and value.__module__ == models.__name__
        and value is not models.Model
    }
    assert object_schemas == set(MODELLED)
    assert model_classes == set(MODELLED)


@pytest.mark.parametrize("name", MODELLED)
def test_model_matches_schema(name: str) -> None:
    assert problems(name, getattr(models, name), SCHEMAS) == []


def test_microvm_id_pattern_matches() -> None:
    alias = typing.get_args(models.MicroVMId)
    assert alias[0] is str
    assert len(alias) == 2
    assert model_constraints(alias[1]) == {"pattern": SCHEMAS["MicroVMId"]["pattern"]}


@pytest.mark.parametrize(
    ("alias", "schema", "prop"),
    [
        (models.MicroVMState, "MicroVMStatus", "state"),
        (models.ContainerState, "ContainerStatus", "state"),
        (models.RestartPolicy, "MicroVMSpec", "restart_policy"),
        (models.HostState, "Host", "state"),
        (models.RuntimeName, "Host", "runtime"),
        (models.EventType, "Event", "type"),
    ],
)
def test_named_literals_match_their_enums(alias: Any, schema: str, prop: str) -> None:
    assert list(typing.get_args(alias)) == SCHEMAS[schema]["properties"][prop]["enum"]


def test_final_states_are_microvm_states() -> None:
    assert set(typing.get_args(models.MicroVMState)) >= models.FINAL_STATES


def test_every_error_code_the_daemon_sends_is_documented() -> None:
    description = SCHEMAS["Error"]["properties"]["code"]["description"]
    documented = {code.strip() for code in description.split(",")}
    sent = {cls.code for cls in errors.FLEET_ERRORS.values()} | {errors.FleetError.code}
    assert documented == sent


# The checker itself notices drift, so the tests above can fail.


def _mutated(change: Any) -> dict[str, Any]:
    schemas = copy.deepcopy(SCHEMAS)
    change(schemas)
    return schemas


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        (
            "Resources",
            lambda s: s["Resources"]["properties"].update(gpus={"type": "integer"}),
            "Resources.properties",
        ),
        (
            "Host",
            lambda s: s["Host"]["required"].remove("notes"),
            "Host.required",
        ),
        (
            "MicroVMStatus",
            lambda s: s["MicroVMStatus"]["properties"]["state"]["enum"].append("paused"),
            "MicroVMStatus.state type",
        ),
        (
            "MicroVMSpec",
            lambda s: s["MicroVMSpec"]["properties"]["vcpu_millis"].update(maximum=32000),
            "MicroVMSpec.vcpu_millis constraints",
        ),
        (
            "MicroVMSpec",
            lambda s: s["MicroVMSpec"]["properties"]["mem_mib"].pop("minimum"),
            "MicroVMSpec.mem_mib constraints",
        ),
        (
            "HostAction",
            lambda s: s["HostAction"]["properties"]["grace_seconds"].update(default=60),
            "HostAction.grace_seconds default",
        ),
        (
            "Event",
            lambda s: s["Event"]["properties"]["microvm"].pop("nullable"),
            "Event.microvm type",
        ),
        (
            "MicroVM",
            lambda s: s["MicroVMId"].update(pattern="^[a-z]+$"),
            "MicroVM.id constraints",
        ),
        (
            "Container",
            lambda s: s["Container"]["properties"]["env"]["items"].update(
                {"$ref": "#/components/schemas/Resources"}
            ),
            "Container.env type",
        ),
        (
            "Error",
            lambda s: s["Error"].pop("additionalProperties"),
            "Error.additionalProperties: false",
        ),
        (
            "MemoryStats",
            lambda s: s["MemoryStats"]["properties"]["rss_bytes"].pop("nullable"),
            "MemoryStats.rss_bytes type",
        ),
        (
            "MicroVMStats",
            lambda s: s["MicroVMStats"]["required"].remove("containers"),
            "MicroVMStats.required",
        ),
    ],
)
def test_a_changed_schema_is_reported(name: str, change: Any, expected: str) -> None:
    found = problems(name, getattr(models, name), _mutated(change))
    assert [p for p in found if p.startswith(expected + ":")], found


class ResourcesPlusField(models.Resources):
    gpus: int = 0


class HostActionRequiredGrace(models.HostAction):
    grace_seconds: int = pydantic.Field(ge=0, le=86400)


class HostActionWiderAction(models.HostAction):
    action_type: typing.Literal["Drain", "Activate", "Reboot"]  # type: ignore[assignment]


class EnvVarLooseName(models.EnvVar):
    name: str


@pytest.mark.parametrize(
    ("name", "model", "expected"),
    [
        ("Resources", ResourcesPlusField, "Resources.properties"),
        ("HostAction", HostActionRequiredGrace, "HostAction.required"),
        ("HostAction", HostActionWiderAction, "HostAction.action_type type"),
        ("EnvVar", EnvVarLooseName, "EnvVar.name constraints"),
    ],
)
def test_a_changed_model_is_reported(
    name: str, model: type[pydantic.BaseModel], expected: str
) -> None:
    found = problems(name, model, SCHEMAS)
    assert [p for p in found if p.startswith(expected + ":")], found
