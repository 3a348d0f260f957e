"""The informers' cache as client-go's Indexer: named indexes kept current on every add,
update and delete; deletions bound to one object (UID); the provider's own writes read
back at once but never over a later version."""

from __future__ import annotations

from typing import Any

from vk_fargate import world
from vk_fargate.fargate import nodes as fargate_nodes
from vk_fargate.k8s import informers

JSON = dict[str, Any]


def _pod(name: str, uid: str, version: int, node: str = "") -> JSON:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": str(version)},
        "spec": {"nodeName": node},
    }


def _by_node(cache: informers.Indexer) -> None:
    cache.add_indexer("node", lambda p: [p["spec"]["nodeName"]] if p["spec"]["nodeName"] else [])


def test_indexes_follow_adds_updates_and_deletes() -> None:
    cache = informers.Indexer()
    cache.store(_pod("a", "u-a", 1, node="n1"))
    _by_node(cache)  # an index added later covers what is cached already
    cache.store(_pod("b", "u-b", 2, node="n1"))
    assert sorted(p["metadata"]["name"] for p in cache.by_index("node", "n1")) == ["a", "b"]
    cache.store(_pod("a", "u-a", 3, node="n2"))  # moved
    assert [p["metadata"]["name"] for p in cache.by_index("node", "n1")] == ["b"]
    assert [p["metadata"]["name"] for p in cache.by_index("node", "n2")] == ["a"]
    cache.remove(_pod("b", "u-b", 4))
    assert cache.by_index("node", "n1") == []
    assert "n1" not in cache.indices["node"]


def test_a_deletion_removes_only_that_object_never_a_successor() -> None:
    cache = informers.Indexer()
    cache.store(_pod("a", "u-new", 5))
    cache.remove(_pod("a", "u-old", 4))
    assert cache.get("ns/a") is not None


def test_own_writes_are_read_back_only_when_newer() -> None:
    cache = informers.Indexer()
    cache.store(_pod("a", "u-a", 10))
    cache.wrote(_pod("a", "u-a", 12, node="n1"))
    assert cache.get("ns/a") == _pod("a", "u-a", 12, node="n1")
    cache.wrote(_pod("a", "u-a", 11))  # an older answer loses
    cache.store(_pod("a", "u-a", 11))  # and so does a watch event the write overtook
    assert cache.get("ns/a") == _pod("a", "u-a", 12, node="n1")
    cache.store(_pod("a", "u-a", 13))
    assert cache.get("ns/a") == _pod("a", "u-a", 13)


def test_a_write_of_an_object_the_watch_saw_go_does_not_bring_it_back() -> None:
    cache = informers.Indexer()
    cache.seen_version = 20  # the watch has come this far, and the cache lacks "a"
    cache.wrote(_pod("a", "u-a", 15))  # its deletion (after 15) was seen
    assert cache.get("ns/a") is None
    cache.wrote(_pod("b", "u-b", 21))  # created by us, not yet reached by the watch
    assert cache.get("ns/b") is not None


def test_the_world_views_pods_and_nodes_through_the_indexes() -> None:
    state = world.World()
    state.pod_cache.store(_pod("a", "u-a", 1))
    node = {
        "metadata": {
            "name": "fargate-ip-10-0-0-1",
            "uid": "n-1",
            "resourceVersion": "2",
            "annotations": {fargate_nodes.POD_UID_ANNOTATION: "u-a"},
        }
    }
    state.node_cache.store(node)
    assert state.pods["u-a"]["metadata"]["name"] == "a"
    assert state.pod_by_name("ns", "a") is state.pods["u-a"]
    assert state.nodes["fargate-ip-10-0-0-1"] is node
    assert state.nodes_by_pod["u-a"] is node
    assert list(state.pods) == ["u-a"] and len(state.nodes) == 1
    state.pod_cache.store(_pod("a", "u-a2", 3))  # the name now another pod's
    assert "u-a" not in state.pods and "u-a2" in state.pods
    state.node_cache.remove(node)
    assert "u-a" not in state.nodes_by_pod and not state.nodes


def test_cached_objects_keep_no_managed_fields() -> None:
    cache = informers.Indexer()
    pod = _pod("a", "u-a", 1)
    pod["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    cache.store(pod)
    written = _pod("a", "u-a", 2)
    written["metadata"]["managedFields"] = [{"manager": "vk-fargate"}]
    cache.wrote(written)
    cached = cache.get("ns/a")
    assert cached is not None
    assert cached["metadata"] == {
        "name": "a", "namespace": "ns", "uid": "u-a", "resourceVersion": "2"
    }  # fmt: skip
