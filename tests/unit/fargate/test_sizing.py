"""Table-driven tests of Fargate pod sizing: combination table, overhead, init/sidecar rules."""

from __future__ import annotations

from typing import Any

import pytest

from vk_fargate.fargate import sizing

# EKS's table, written out from fargate-facts.md §1 (not imported from the code).
FACTS_TABLE: list[tuple[float, list[float]]] = [
    (0.25, [0.5, 1, 2]),
    (0.5, [1, 2, 3, 4]),
    (1, [2, 3, 4, 5, 6, 7, 8]),
    (2, [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
    (4, [8, *range(9, 31)]),
    (8, [16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60]),
    (16, [32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120]),
]
OVERHEAD = 256


def container(
    cpu: str | None = None,
    memory: str | None = None,
    *,
    limits: dict[str, str] | None = None,
    storage: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    requests = {
        k: v
        for k, v in {"cpu": cpu, "memory": memory, "ephemeral-storage": storage}.items()
        if v is not None
    }
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": "c", "image": "busybox", "resources": resources, **extra}


def spec(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"containers": list(containers)}
    if init is not None:
        out["initContainers"] = init
    return out


def provisioned(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> str:
    return sizing.size(spec(*containers, init=init)).capacity_provisioned


def mib_for(gb: float) -> str:
    """The largest memory request that still fits ``gb`` once the overhead is added."""
    return f"{int(gb * 1024) - OVERHEAD}Mi"


def mib_over(gb: float) -> str:
    """One MiB more than ``mib_for(gb)``: no longer fits ``gb``."""
    return f"{int(gb * 1024) - OVERHEAD + 1}Mi"


# Per vCPU row: (cpu request, memory request, expected combination).
ROW_CASES = [
    # 0.25 vCPU: 0.5, 1, 2 GB
    ("250m", None, "0.25vCPU 0.5GB"),
    ("250m", mib_for(0.5), "0.25vCPU 0.5GB"),
    ("250m", mib_over(0.5), "0.25vCPU 1GB"),
    ("250m", mib_for(2), "0.25vCPU 2GB"),
    ("250m", mib_over(2), "0.5vCPU 3GB"),
    # 0.5 vCPU: 1 to 4 GB
    ("251m", None, "0.5vCPU 1GB"),
    ("500m", None, "0.5vCPU 1GB"),
    ("500m", mib_over(1), "0.5vCPU 2GB"),
    ("500m", mib_for(4), "0.5vCPU 4GB"),
    ("500m", mib_over(4), "1vCPU 5GB"),
    # 1 vCPU: 2 to 8 GB
    ("501m", None, "1vCPU 2GB"),
    ("1", None, "1vCPU 2GB"),
    ("1", mib_over(2), "1vCPU 3GB"),
    ("1", mib_for(8), "1vCPU 8GB"),
    ("1", mib_over(8), "2vCPU 9GB"),
    # 2 vCPU: 4 to 16 GB
    ("1001m", None, "2vCPU 4GB"),
    ("2", None, "2vCPU 4GB"),
    ("2", mib_over(4), "2vCPU 5GB"),
    ("2", mib_for(16), "2vCPU 16GB"),
    ("2", mib_over(16), "4vCPU 17GB"),
    # 4 vCPU: 8 to 30 GB
    ("2001m", None, "4vCPU 8GB"),
    ("4", None, "4vCPU 8GB"),
    ("4", mib_over(8), "4vCPU 9GB"),
    ("4", mib_for(30), "4vCPU 30GB"),
    ("4", mib_over(30), "8vCPU 32GB"),
    # 8 vCPU: 16 to 60 GB in 4 GB steps
    ("4001m", None, "8vCPU 16GB"),
    ("8", None, "8vCPU 16GB"),
    ("8", mib_over(16), "8vCPU 20GB"),
    ("8", mib_for(60), "8vCPU 60GB"),
    ("8", mib_over(60), "16vCPU 64GB"),
    # 16 vCPU: 32 to 120 GB in 8 GB steps
    ("8001m", None, "16vCPU 32GB"),
    ("16", None, "16vCPU 32GB"),
    ("16", mib_over(32), "16vCPU 40GB"),
    ("16", mib_for(120), "16vCPU 120GB"),
]


@pytest.mark.parametrize(("cpu", "memory", "expected"), ROW_CASES)
def test_every_row_smallest_largest_and_just_over_a_boundary(
    cpu: str, memory: str | None, expected: str
) -> None:
    assert provisioned(container(cpu, memory)) == expected


def _every_combination() -> list[tuple[float, float]]:
    return [(vcpu, gb) for vcpu, memories in FACTS_TABLE for gb in memories]


@pytest.mark.parametrize(("vcpu", "gb"), _every_combination())
def test_each_combination_is_chosen_when_the_request_fills_it_exactly(
    vcpu: float, gb: float
) -> None:
    size = sizing.size(spec(container(f"{int(vcpu * 1000)}m", mib_for(gb))))
    assert (size.vcpu_millis, size.mem_mib) == (int(vcpu * 1000), int(gb * 1024))
    assert size.capacity_provisioned == f"{vcpu:g}vCPU {gb:g}GB"


@pytest.mark.parametrize(("vcpu", "gb"), _every_combination()[:-1])
def test_one_mib_over_a_combination_rounds_up_to_the_next_one(vcpu: float, gb: float) -> None:
    # The next combination: the next memory of the row, else the first row with more.
    memories = dict(FACTS_TABLE)[vcpu]
    bigger = [m for m in memories if m > gb]
    if bigger:
        expected = (vcpu, bigger[0])
    else:
        expected = next((v, m) for v, ms in FACTS_TABLE for m in ms if v > vcpu and m > gb)
    size = sizing.size(spec(container(f"{int(vcpu * 1000)}m", mib_over(gb))))
    assert size.capacity_provisioned == f"{expected[0]:g}vCPU {expected[1]:g}GB"


def test_the_combination_list_is_the_facts_table() -> None:
    listed = [(s.vcpu_millis, s.mem_mib) for s in sizing.combinations()]
    assert listed == [(int(v * 1000), int(gb * 1024)) for v, gb in _every_combination()]


def test_no_requests_gets_the_smallest_combination() -> None:
    assert provisioned({"name": "c", "image": "busybox"}) == "0.25vCPU 0.5GB"
    assert sizing.size({}) == sizing.Size(250, 512, 20)


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        # 256 MiB + 256 MiB overhead = 512 MiB: exactly 0.5 GB.
        ("256Mi", "0.25vCPU 0.5GB"),
        ("257Mi", "0.25vCPU 1GB"),
        # 512 MiB + 256 MiB = 768 MiB > 0.5 GB.
        ("512Mi", "0.25vCPU 1GB"),
        ("768Mi", "0.25vCPU 1GB"),
        ("769Mi", "0.25vCPU 2GB"),
    ],
)
def test_the_256_mib_overhead_is_added_before_rounding(memory: str, expected: str) -> None:
    assert provisioned(container(memory=memory)) == expected


def test_seed_limits_only_2gi_and_2000m_give_2vcpu_4gb() -> None:
    assert provisioned(container(limits={"cpu": "2000m", "memory": "2Gi"})) == "2vCPU 4GB"


def test_1_vcpu_and_8_gb_give_2vcpu_9gb() -> None:
    assert provisioned(container("1", "8Gi")) == "2vCPU 9GB"


def test_requests_win_over_limits() -> None:
    c = container("500m", "1Gi", limits={"cpu": "4", "memory": "8Gi"})
    assert sizing.pod_request(spec(c)) == sizing.Request(500, 1024, 0)
    assert provisioned(c) == "0.5vCPU 2GB"


def test_limits_stand_in_for_missing_requests_per_resource() -> None:
    # CPU requested, memory only limited: the memory limit is the memory request.
    c = container("500m", limits={"cpu": "2", "memory": "3Gi"})
    assert sizing.pod_request(spec(c)) == sizing.Request(500, 3072, 0)
    assert provisioned(c) == "0.5vCPU 4GB"


def test_long_running_containers_are_summed() -> None:
    pod = spec(container("250m", "512Mi"), container("500m", "1Gi"), container("250m", "512Mi"))
    assert sizing.pod_request(pod) == sizing.Request(1000, 2048, 0)
    assert sizing.size(pod).capacity_provisioned == "1vCPU 3GB"


def test_the_largest_init_container_wins_over_a_smaller_sum() -> None:
    pod = spec(
        container("250m", "256Mi"),
        container("250m", "256Mi"),
        init=[container("1", "1Gi"), container("2", "512Mi")],
    )
    assert sizing.pod_request(pod) == sizing.Request(2000, 1024, 0)
    assert sizing.size(pod).capacity_provisioned == "2vCPU 4GB"


def test_the_sum_wins_over_a_smaller_init_container() -> None:
    pod = spec(container("1", "2Gi"), container("1", "2Gi"), init=[container("500m", "1Gi")])
    assert sizing.pod_request(pod) == sizing.Request(2000, 4096, 0)


def test_init_and_long_running_are_compared_per_resource() -> None:
    pod = spec(container("250m", "3Gi"), init=[container("2", "128Mi")])
    assert sizing.pod_request(pod) == sizing.Request(2000, 3072, 0)
    assert sizing.size(pod).capacity_provisioned == "2vCPU 4GB"


def test_sidecar_init_containers_count_as_long_running() -> None:
    sidecar = container("500m", "512Mi", restartPolicy="Always")
    pod = spec(container("500m", "512Mi"), init=[sidecar])
    assert sizing.pod_request(pod) == sizing.Request(1000, 1024, 0)
    assert sizing.size(pod).capacity_provisioned == "1vCPU 2GB"


def test_a_plain_init_container_is_not_summed_with_the_app() -> None:
    pod = spec(container("500m", "512Mi"), init=[container("500m", "512Mi")])
    assert sizing.pod_request(pod) == sizing.Request(500, 512, 0)


def test_an_init_container_runs_beside_the_sidecars_started_before_it() -> None:
    sidecar = container("250m", "256Mi", restartPolicy="Always")
    before = spec(container("250m", "256Mi"), init=[sidecar, container("1", "1Gi")])
    assert sizing.pod_request(before) == sizing.Request(1250, 1280, 0)
    # Started after the init container: the sidecar is not beside it.
    after = spec(container("250m", "256Mi"), init=[container("1", "1Gi"), sidecar])
    assert sizing.pod_request(after) == sizing.Request(1000, 1024, 0)


@pytest.mark.parametrize(
    "c",
    [
        container("16001m"),
        container("17", "1Gi"),
        container(memory=mib_over(120)),
        container("1", "121Gi"),
    ],
)
def test_more_than_16_vcpu_or_120_gb_is_too_large(c: dict[str, Any]) -> None:
    with pytest.raises(sizing.TooLarge, match="the largest Fargate size is 16 vCPU and 120 GB"):
        sizing.size(spec(c))


def test_too_large_names_the_request_with_its_overhead() -> None:
    with pytest.raises(sizing.TooLarge) as info:
        sizing.size(spec(container("17", "1Gi")))
    assert "17000m vCPU" in str(info.value)
    assert "1280 MiB memory" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_the_largest_request_that_fits_is_16vcpu_120gb() -> None:
    size = sizing.size(spec(container("16", mib_for(120))))
    assert size == sizing.Size(16000, 122880, 20)
    assert size.capacity_provisioned == "16vCPU 120GB"


@pytest.mark.parametrize(
    ("storage", "expected_gib"),
    [
        (None, 20),
        ("1Gi", 20),
        ("20Gi", 20),
        ("20481Mi", 21),  # rounded up to whole GiB
        ("100Gi", 100),
        ("175Gi", 175),
    ],
)
def test_ephemeral_storage(storage: str | None, expected_gib: int) -> None:
    assert sizing.size(spec(container(storage=storage))).ephemeral_gib == expected_gib


def test_ephemeral_storage_is_summed_over_long_running_containers() -> None:
    pod = spec(container(storage="50Gi"), container(storage="60Gi"))
    assert sizing.size(pod).ephemeral_gib == 110


def test_ephemeral_storage_does_not_change_the_combination() -> None:
    size = sizing.size(spec(container("1", "1Gi", storage="100Gi")))
    assert (size.vcpu_millis, size.mem_mib) == (1000, 2048)


@pytest.mark.parametrize("storage", ["176Gi", "179201Mi", "1Ti"])
def test_over_175_gib_of_ephemeral_storage_is_refused(storage: str) -> None:
    with pytest.raises(sizing.TooLarge, match=r"ephemeral storage \d+ GiB is over the 175 GiB"):
        sizing.size(spec(container(storage=storage)))


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (sizing.Size(250, 512), "0.25vCPU 0.5GB"),
        (sizing.Size(250, 1024), "0.25vCPU 1GB"),
        (sizing.Size(500, 3072), "0.5vCPU 3GB"),
        (sizing.Size(2000, 4096), "2vCPU 4GB"),
        (sizing.Size(2000, 9216), "2vCPU 9GB"),
        (sizing.Size(16000, 122880), "16vCPU 120GB"),
    ],
)
def test_capacity_provisioned_text(size: sizing.Size, text: str) -> None:
    assert size.capacity_provisioned == text


def test_an_invalid_quantity_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        sizing.size(spec(container(memory="lots")))
