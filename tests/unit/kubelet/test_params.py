"""The kubelet API reads its request parameters as kubelet does, and refuses bad ones
with a message naming them: log options, paths to subresources, bearer headers."""

from __future__ import annotations

import datetime

import pytest

from vk_fargate import errors
from vk_fargate.kubelet import auth, server, streaming


def test_no_parameters_mean_the_whole_log_once() -> None:
    assert server.parse_log_options({}) == server.LogOptions(
        follow=False,
        tail_lines=None,
        limit_bytes=None,
        previous=False,
        since_seconds=None,
        since_time=None,
        timestamps=False,
    )


def test_every_parameter_is_read() -> None:
    options = server.parse_log_options(
        {
            "follow": "true",
            "tailLines": "0",
            "limitBytes": "1",
            "previous": "1",
            "sinceSeconds": "30",
            "timestamps": "TRUE",
        }
    )
    assert options == server.LogOptions(
        follow=True, tail_lines=0, limit_bytes=1, previous=True, since_seconds=30, timestamps=True
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        ("2024-05-01t12:00:00z", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)),
        (
            "2024-05-01T14:00:00.123456789+02:00",
            datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC),
        ),
    ],
)
def test_since_time_is_rfc3339_with_a_zone(raw: str, expected: datetime.datetime) -> None:
    since = server.parse_log_options({"sinceTime": raw}).since_time
    assert since == expected
    assert since is not None and since.tzinfo is not None


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("False", False)])
def test_false_booleans(raw: str, expected: bool) -> None:
    assert server.parse_log_options({"follow": raw}).follow is expected


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"tailLines": "-1"}, "tailLines must be at least 0"),
        ({"tailLines": "ten"}, "tailLines must be an integer"),
        ({"tailLines": "1.5"}, "tailLines must be an integer"),
        ({"tailLines": " 5"}, "tailLines must be an integer"),
        ({"tailLines": "1_000"}, "tailLines must be an integer"),
        ({"tailLines": str(2**63)}, "tailLines is out of range"),
        ({"limitBytes": "0"}, "limitBytes must be at least 1"),
        ({"limitBytes": ""}, "limitBytes must be an integer"),
        ({"sinceSeconds": "0"}, "sinceSeconds must be at least 1"),
        ({"sinceSeconds": "-5"}, "sinceSeconds must be at least 1"),
        ({"sinceTime": "2024-05-01"}, "sinceTime must be an RFC 3339 time"),
        ({"sinceTime": "2024-05-01T12:00:00"}, "sinceTime must be an RFC 3339 time"),
        ({"sinceTime": "2024-05-01 12:00:00Z"}, "sinceTime must be an RFC 3339 time"),
        ({"sinceTime": "1714564800"}, "sinceTime must be an RFC 3339 time"),
        ({"sinceTime": "2024-13-01T12:00:00Z"}, "sinceTime is not a valid time"),
        (
            {"sinceSeconds": "10", "sinceTime": "2024-05-01T12:00:00Z"},
            "at most one of sinceSeconds and sinceTime",
        ),
        ({"follow": "yes"}, "follow must be true, false, 1 or 0"),
        ({"previous": ""}, "previous must be true, false, 1 or 0"),
        ({"timestamps": "2"}, "timestamps must be true, false, 1 or 0"),
    ],
)
def test_bad_parameters_are_refused_by_name(query: dict[str, str], names: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        server.parse_log_options(query)
    assert caught.value.status == 400
    assert names in caught.value.message


def test_unknown_parameters_are_ignored_as_kubelet_does() -> None:
    assert server.parse_log_options({"stream": "All", "container": "x"}) == server.LogOptions()


def test_containers_of_every_kind_are_known() -> None:
    pod = {
        "spec": {
            "containers": [{"name": "app"}],
            "initContainers": [{"name": "setup"}],
            "ephemeralContainers": [{"name": "debugger"}],
        }
    }
    assert streaming.container_names(pod) == {"app", "setup", "debugger"}
    assert streaming.container_names({}) == set()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/containerLogs/ns/pod/app", ("log", "proxy")),
        ("/pods", ("pods", "proxy")),
        ("/stats/summary", ("stats",)),
        ("/metrics/resource", ("metrics",)),
        ("/logs/syslog", ("log",)),
        ("/podsx", ("proxy",)),  # a prefix only counts at a path boundary
        ("/exec/ns/pod/app", ("proxy",)),
        ("/", ("proxy",)),
    ],
)
def test_paths_map_to_node_subresources(path: str, expected: tuple[str, ...]) -> None:
    assert auth.subresources(path) == expected


def test_methods_map_to_verbs() -> None:
    assert [auth.verb(m) for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")] == [
        "get",
        "get",
        "create",
        "update",
        "patch",
        "delete",
    ]


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer abc", "abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert auth.bearer_token(header) == token


def test_cache_expires_entries_and_stays_bounded() -> None:
    now = [0.0]
    cache: auth.TTLCache[str, bool] = auth.TTLCache(lambda: now[0], size=2)
    cache.put("a", True, 10)
    assert cache.get("a") == (True, True)
    now[0] = 10.0
    assert cache.get("a") == (False, None)
    cache.put("a", False, 100)
    cache.put("b", True, 100)
    cache.put("c", True, 100)  # full: the oldest entry goes
    assert cache.get("a") == (False, None)
    assert cache.get("b") == (True, True)
    assert cache.get("c") == (True, True)
