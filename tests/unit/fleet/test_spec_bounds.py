"""The fleet API's bounds on one container: what exec(2) and a host can take."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from vk_fargate.fleet import models


def _container(**fields: Any) -> models.Container:
    return models.Container.model_validate({"name": "app", "image": "busybox", **fields})


def _refusal(**fields: Any) -> str:
    with pytest.raises(pydantic.ValidationError) as caught:
        _container(**fields)
    return models.invalid(caught.value)


def test_strings_up_to_the_kernels_limits_pass() -> None:
    largest = "x" * (models.MAX_EXEC_STRING - 1)  # with its NUL: exactly the limit
    _container(args=[largest])
    _container(env=[{"name": "V", "value": "x" * (models.MAX_EXEC_STRING - 3)}])
    eight = ["x" * (models.MAX_EXEC_TOTAL // 8 - 1)] * 8  # together exactly 1 MiB
    _container(args=eight)


def test_one_string_over_the_kernels_limit_is_refused_naming_the_container() -> None:
    message = _refusal(args=["x" * models.MAX_EXEC_STRING])
    assert "container app:" in message and f"{models.MAX_EXEC_STRING + 1} bytes" in message
    message = _refusal(env=[{"name": "V", "value": "x" * (models.MAX_EXEC_STRING - 2)}])
    assert "over the 131072 a process can be given" in message


def test_everything_together_over_a_mebibyte_is_refused() -> None:
    nine = ["x" * (models.MAX_EXEC_TOTAL // 8 - 1)] * 9
    assert "command, args and env are" in _refusal(command=nine[:1], args=nine[1:])


def test_a_nul_byte_is_refused() -> None:
    assert "holds a NUL byte" in _refusal(command=["sh\0-c"])


@pytest.mark.parametrize("name", ["A=B", "", "caf\u00e9", "tab\there"])
def test_env_names_follow_kubernetes(name: str) -> None:
    assert _refusal(env=[{"name": name}]).startswith("env.0.name:")


@pytest.mark.parametrize("name", ["PATH", "my.var-1", "with space", "{weird}~"])
def test_printable_env_names_but_equals_pass(name: str) -> None:
    _container(env=[{"name": name}])


def test_working_dir_must_be_absolute() -> None:
    assert "'rel/dir' is not an absolute path" in _refusal(working_dir="rel/dir")
    assert _container(working_dir="/srv/app").working_dir == "/srv/app"


def test_counts_are_bounded() -> None:
    assert _refusal(env=[{"name": "A"}] * (models.MAX_ENV + 1)).startswith("env:")
    app = {"name": "app", "image": "busybox"}
    many = [{**app, "name": f"c{n}"} for n in range(models.MAX_CONTAINERS + 1)]
    for field in ("containers", "init_containers"):
        spec = {"vcpu_millis": 250, "mem_mib": 512, "containers": [app], field: many}
        with pytest.raises(pydantic.ValidationError) as caught:
            models.MicroVMSpec.model_validate(spec)
        assert models.invalid(caught.value).startswith(f"{field}:")
