"""The admission decisions: which pods go to Fargate, exactly what the patch changes, and
that no input whatsoever makes the webhook raise anything but ``MalformedReview``.

Every patch is decoded and applied with the small RFC 6902 applier below, so the tests
check the pod the API server would store, not the patch's spelling.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vk_fargate.admission import mutation
from vk_fargate.fargate import profiles

JSON = dict[str, Any]
POD = {"group": "", "version": "v1", "kind": "Pod"}
LABEL = profiles.PROFILE_LABEL


def _profile(
    name: str, namespace: str, labels: dict[str, str] | None = None, **kw: Any
) -> profiles.Profile:
    selector = profiles.Selector(namespace=namespace, labels=labels or {})
    return profiles.Profile(name=name, selectors=[selector], **kw)


def a_pod(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owner: str | None = None,
) -> JSON:
    meta: JSON = {"generateName": "web-"}
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": "o"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }


def a_review(
    obj: Any,
    namespace: str = "fargate-workload",
    *,
    operation: str = "CREATE",
    kind: JSON = POD,
    uid: str = "0b2c6f3e-1",
    **extra: Any,
) -> JSON:
    request = {
        "uid": uid,
        "kind": kind,
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": operation,
        "object": obj,
        **extra,
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": copy.deepcopy(request),  # tests mutate reviews: share nothing
    }


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")  # RFC 6901: ~1 first


def apply_patch(document: Any, patch: list[JSON]) -> Any:
    """RFC 6902 ``add`` (the only op the webhook emits); a bad pointer fails the test."""
    result = copy.deepcopy(document)
    for op in patch:
        assert op["op"] == "add", op
        assert op["path"].startswith("/"), op
        *parents, last = [_unescape(t) for t in op["path"].split("/")[1:]]
        parent = result
        for token in parents:
            assert isinstance(parent, dict) and token in parent, f"{op['path']}: no {token!r}"
            parent = parent[token]
        assert isinstance(parent, dict), f"{op['path']}: the parent is {parent!r}"
        parent[last] = copy.deepcopy(op["value"])
    return result


def decoded_patch(reply: JSON) -> list[JSON] | None:
    response = reply["response"]
    if "patch" not in response:
        assert "patchType" not in response
        return None
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"], validate=True))
    assert isinstance(patch, list) and patch
    return patch


def check_envelope(reply: JSON, uid: str) -> None:
    assert reply["apiVersion"] == "admission.k8s.io/v1"
    assert reply["kind"] == "AdmissionReview"
    assert reply["response"]["uid"] == uid
    json.dumps(reply)  # it must go on the wire as it is


WEB = _profile("web", "fargate-workload")
BATCH = _profile("batch", "jobs", {"tier": "batch"})
WILD = _profile("wild", "team-*", {"app": "api-?"})
DEV = _profile("dev", "dev-?")
ALPHA = _profile("alpha", "shared")
ZETA = _profile("zeta", "shared")
ALL = [WEB, BATCH, WILD, DEV, ZETA, ALPHA]  # not in name order on purpose

CASES = [
    # (id, pod, namespace, expected profile or None)
    ("namespace", a_pod(), "fargate-workload", "web"),
    ("other namespace", a_pod(), "default", None),
    ("namespace and label", a_pod({"tier": "batch", "x": "y"}), "jobs", "batch"),
    ("label missing", a_pod({"x": "y"}), "jobs", None),
    ("label value differs", a_pod({"tier": "web"}), "jobs", None),
    ("label key differs", a_pod({"tierx": "batch"}), "jobs", None),
    ("wildcards", a_pod({"app": "api-1"}), "team-payments", "wild"),
    ("? is one character", a_pod({"app": "api-10"}), "team-payments", None),
    ("* needs its prefix", a_pod({"app": "api-1"}), "teams", None),
    ("? in namespace", a_pod(), "dev-1", "dev"),
    ("? not two", a_pod(), "dev-12", None),
    ("first by name wins", a_pod({"app": "a"}), "shared", "alpha"),
    ("label picks a match", a_pod({LABEL: "zeta"}), "shared", "zeta"),
    ("label naming a non-match", a_pod({LABEL: "web"}), "shared", "alpha"),
    ("label naming nothing", a_pod({LABEL: "nope"}), "shared", "alpha"),
    ("label cannot pull in", a_pod({LABEL: "web"}), "default", None),
    ("opted out", a_pod(annotations={"eks.amazonaws.com/compute-type": "ec2"}), "shared", None),
    ("compute-type fargate", a_pod(annotations={"eks.amazonaws.com/compute-type": "fargate"}),
     "shared", "alpha"),
    ("DaemonSet pod", a_pod(owner="DaemonSet"), "shared", None),
    ("ReplicaSet pod", a_pod(owner="ReplicaSet"), "shared", "alpha"),
    ("no labels at all", a_pod(), "shared", "alpha"),
    ("empty labels", a_pod({}), "shared", "alpha"),
]  # fmt: skip


@pytest.mark.parametrize(("pod", "namespace", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_review_sends_matching_pods_to_fargate(
    pod: JSON, namespace: str, expected: str | None
) -> None:
    reply = mutation.review(a_review(pod, namespace), ALL)
    check_envelope(reply, "0b2c6f3e-1")
    assert reply["response"]["allowed"] is True
    patch = decoded_patch(reply)
    if expected is None:
        assert patch is None
        return
    assert patch is not None
    wanted = copy.deepcopy(pod)
    wanted["spec"]["schedulerName"] = "fargate-scheduler"
    wanted["metadata"].setdefault("labels", {})[LABEL] = expected
    assert apply_patch(pod, patch) == wanted  # and nothing else changed


def test_the_label_key_is_escaped_into_existing_labels() -> None:
    patch = decoded_patch(mutation.review(a_review(a_pod({"app": "web"})), [WEB]))
    assert patch == [
        {"op": "add", "path": "/spec/schedulerName", "value": "fargate-scheduler"},
        {
            "op": "add",
            "path": "/metadata/labels/eks.amazonaws.com~1fargate-profile",
            "value": "web",
        },
    ]


def test_labels_are_created_when_the_pod_has_none() -> None:
    patch = decoded_patch(mutation.review(a_review(a_pod()), [WEB]))
    assert patch is not None
    assert patch[1] == {"op": "add", "path": "/metadata/labels", "value": {LABEL: "web"}}


@pytest.mark.parametrize("pod", [{}, {"metadata": None, "spec": None}], ids=["absent", "null"])
def test_missing_metadata_and_spec_are_added_whole(pod: JSON) -> None:
    patch = decoded_patch(mutation.review(a_review(pod), [WEB]))
    assert patch is not None
    patched = apply_patch(pod, patch)
    assert patched == {
        "metadata": {"labels": {LABEL: "web"}},
        "spec": {"schedulerName": "fargate-scheduler"},
    }


def test_another_scheduler_is_replaced_and_the_name_is_configurable() -> None:
    pod = a_pod()
    pod["spec"]["schedulerName"] = "default-scheduler"
    reply = mutation.review(a_review(pod), [WEB], scheduler="my-fargate")
    patched = apply_patch(pod, decoded_patch(reply) or [])
    assert patched["spec"]["schedulerName"] == "my-fargate"


def test_namespace_comes_from_the_request_when_the_pod_has_none() -> None:
    pod = a_pod()
    assert "namespace" not in pod["metadata"]
    assert decoded_patch(mutation.review(a_review(pod, "fargate-workload"), [WEB])) is not None
    assert decoded_patch(mutation.review(a_review(pod, "default"), [WEB])) is None
    # No request.namespace: the pod's own is used.
    pod["metadata"]["namespace"] = "fargate-workload"
    assert decoded_patch(mutation.review(a_review(pod, ""), [WEB])) is not None


@pytest.mark.parametrize("status", ["CREATING", "DELETING"])
def test_profiles_being_created_or_deleted_take_no_pods(status: str) -> None:
    inactive = _profile("aaa", "fargate-workload", status=status)
    patched = apply_patch(
        a_pod(), decoded_patch(mutation.review(a_review(a_pod()), [inactive, WEB])) or []
    )
    assert patched["metadata"]["labels"][LABEL] == "web"  # fmt: skip


def test_a_failed_profile_keeps_its_pods_for_fargate_scheduler_to_refuse() -> None:
    failed = _profile("aaa", "fargate-workload", status="FAILED")
    patched = apply_patch(
        a_pod(), decoded_patch(mutation.review(a_review(a_pod()), [failed, WEB])) or []
    )
    assert patched["metadata"]["labels"][LABEL] == "aaa"
    assert patched["spec"]["schedulerName"] == "fargate-scheduler"


@pytest.mark.parametrize(
    ("operation", "kind", "extra"),
    [
        ("UPDATE", POD, {"oldObject": a_pod()}),
        ("DELETE", POD, {"oldObject": a_pod()}),
        ("CONNECT", POD, {}),
        ("CREATE", {"group": "", "version": "v1", "kind": "Binding"}, {"subResource": "binding"}),
        ("CREATE", POD, {"subResource": "ephemeralcontainers"}),
        ("CREATE", {"group": "", "version": "v1", "kind": "ConfigMap"}, {}),
        ("CREATE", {"group": "apps", "version": "v1", "kind": "Pod"}, {}),
    ],
    ids=["update", "delete", "connect", "binding", "subresource", "configmap", "other group"],
)
def test_anything_but_a_pod_create_passes_unchanged(
    operation: str, kind: JSON, extra: JSON
) -> None:
    reply = mutation.review(a_review(a_pod(), operation=operation, kind=kind, **extra), [WEB])
    check_envelope(reply, "0b2c6f3e-1")
    assert reply["response"] == {"uid": "0b2c6f3e-1", "allowed": True}


def _with(path: tuple[str, ...], value: Any) -> JSON:
    document = a_review(a_pod({"a": "b"}))
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


DEEP: list[Any] = []
for _ in range(5000):  # deeper than repr() can go
    DEEP = [DEEP]

MALFORMED = [
    ("list", [a_review(a_pod())]),
    ("null", None),
    ("string", "AdmissionReview"),
    ("old apiVersion", _with(("apiVersion",), "admission.k8s.io/v1beta1")),
    ("wrong kind", _with(("kind",), "Pod")),
    ("no request", _with(("request",), KeyError)),
    ("request list", _with(("request",), [])),
    ("no uid", _with(("request", "uid"), KeyError)),
    ("empty uid", _with(("request", "uid"), "")),
    ("int uid", _with(("request", "uid"), 7)),
    ("no operation", _with(("request", "operation"), KeyError)),
    ("no kind", _with(("request", "kind"), KeyError)),
    ("kind not strings", _with(("request", "kind"), {"group": "", "version": 1, "kind": "Pod"})),
    ("subResource int", _with(("request", "subResource"), 1)),
    ("no object", _with(("request", "object"), KeyError)),
    ("object list", _with(("request", "object"), [])),
    ("metadata string", _with(("request", "object", "metadata"), "m")),
    ("labels list", _with(("request", "object", "metadata", "labels"), ["a"])),
    ("label value int", _with(("request", "object", "metadata", "labels"), {"a": 1})),
    ("annotations string", _with(("request", "object", "metadata", "annotations"), "x")),
    ("owners dict", _with(("request", "object", "metadata", "ownerReferences"), {})),
    ("owners strings", _with(("request", "object", "metadata", "ownerReferences"), ["x"])),
    ("spec list", _with(("request", "object", "spec"), [])),
    ("no namespace", _with(("request", "namespace"), KeyError)),
    ("namespace int", _with(("request", "namespace"), 3)),
    ("deeply nested kind", _with(("request", "kind"), DEEP)),
]


@pytest.mark.parametrize("document", [c[1] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_reviews_raise_a_value_error_that_says_why(document: Any) -> None:
    with pytest.raises(mutation.MalformedReview) as caught:
        mutation.review(document, [WEB])
    assert isinstance(caught.value, ValueError)
    assert str(caught.value)


def _profile_review(operation: str = "CREATE", kind: str = "FargateProfile") -> JSON:
    gvk = {"group": "fargate.vk-fargate.io", "version": "v1", "kind": kind}
    obj = {"apiVersion": "fargate.vk-fargate.io/v1", "kind": kind, "metadata": {"name": "p11"}}
    return a_review(obj, "", operation=operation, kind=gvk, uid="p-1")


@pytest.mark.parametrize("count", [0, 9])
def test_profiles_below_the_limit_are_allowed(count: int) -> None:
    reply = mutation.validate_profile(_profile_review(), count)
    check_envelope(reply, "p-1")
    assert reply["response"] == {"uid": "p-1", "allowed": True}


@pytest.mark.parametrize("count", [10, 11])
def test_the_eleventh_profile_is_denied_with_a_clear_message(count: int) -> None:
    reply = mutation.validate_profile(_profile_review(), count)
    check_envelope(reply, "p-1")
    response = reply["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert f"at most 10 Fargate profiles (it has {count})" in message


@pytest.mark.parametrize(
    ("operation", "kind"), [("UPDATE", "FargateProfile"), ("DELETE", "FargateProfile"),
                            ("CREATE", "Other")]
)  # fmt: skip
def test_only_profile_creation_is_limited(operation: str, kind: str) -> None:
    reply = mutation.validate_profile(_profile_review(operation, kind), 10)
    assert reply["response"]["allowed"] is True


def test_profile_validation_refuses_malformed_reviews() -> None:
    with pytest.raises(mutation.MalformedReview):
        mutation.validate_profile({"apiVersion": "v1", "kind": "AdmissionReview"}, 0)


# Property tests: whatever arrives, the answer is a well-formed response or MalformedReview.

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
KEYS = (
    st.sampled_from(["uid", "kind", "request", "object", "metadata", "labels", "spec"]) | st.text()
)
WORDS = st.sampled_from(["CREATE", "Pod", "v1", "", "DaemonSet", "ec2", "admission.k8s.io/v1"])
JSON_VALUES = st.recursive(
    SCALARS | WORDS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)  # fmt: skip
PROPERTY_PROFILES = [
    _profile("catchall", "*"),
    _profile("apps", "team-?", {"app": "*"}),
    _profile("zz", "*", {LABEL: "zz"}),
]


@st.composite
def plausible_reviews(draw: st.DrawFn) -> JSON:
    """Valid reviews of pods with all the shapes that matter for matching and patching."""
    pod: JSON = {}
    if draw(st.booleans()):
        meta: JSON = {}
        label_values = st.sampled_from(["zz", "apps", "x"]) | st.text(max_size=3)
        for field, values in (("labels", label_values), ("annotations", st.just("ec2"))):
            if draw(st.booleans()):
                keys = st.sampled_from([LABEL, "app", "eks.amazonaws.com/compute-type"])
                meta[field] = draw(st.dictionaries(keys | st.text(max_size=3), values, max_size=3))
        if draw(st.booleans()):
            kinds = st.sampled_from(["DaemonSet", "ReplicaSet", "Job"])
            meta["ownerReferences"] = draw(st.lists(st.builds(lambda k: {"kind": k}, kinds)))
        pod["metadata"] = meta
    if draw(st.booleans()):
        pod["spec"] = {"containers": []} if draw(st.booleans()) else {}
    namespace = draw(st.sampled_from(["team-a", "team-ab", "default"]) | st.text(min_size=1))
    operation = draw(st.sampled_from(["CREATE", "CREATE", "UPDATE", "DELETE"]))
    return a_review(pod, namespace, operation=operation, uid=draw(st.text(min_size=1)))


# Members whose shape the webhook relies on: corrupting exactly these finds missing checks.
SHAPES = [
    ("apiVersion",),
    ("kind",),
    ("request",),
    ("request", "uid"),
    ("request", "operation"),
    ("request", "kind"),
    ("request", "kind", "kind"),
    ("request", "subResource"),
    ("request", "namespace"),
    ("request", "object"),
    ("request", "object", "metadata"),
    ("request", "object", "metadata", "namespace"),
    ("request", "object", "metadata", "labels"),
    ("request", "object", "metadata", "annotations"),
    ("request", "object", "metadata", "ownerReferences"),
    ("request", "object", "metadata", "ownerReferences", 0),
    ("request", "object", "spec"),
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _put(document: Any, path: tuple[Any, ...], value: Any) -> None:
    """Set ``path`` to ``value``, making missing objects on the way (where they can be)."""
    parent = document
    for step, following in itertools.pairwise(path):
        if isinstance(parent, dict):
            parent = parent.setdefault(step, [] if isinstance(following, int) else {})
        elif isinstance(parent, list) and isinstance(step, int):
            if not parent:
                parent.append({})
            parent = parent[0]
        else:
            return
    if isinstance(parent, dict):
        parent[path[-1]] = value
    elif isinstance(parent, list):
        parent[:1] = [value]


@st.composite
def mutated_reviews(draw: st.DrawFn) -> tuple[Any, bool]:
    """A plausible review with up to three members replaced or deleted; (review, mutated)."""
    document: Any = draw(plausible_reviews())
    rounds = draw(st.integers(0, 3))
    for _ in range(rounds):
        if draw(st.booleans()):
            _put(document, draw(st.sampled_from(SHAPES)), draw(JSON_VALUES))
            continue
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            document = draw(JSON_VALUES)
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return document, rounds > 0


def _check_reply(document: Any, reply: JSON) -> None:
    """A well-formed response: same uid, allowed, and a patch that applies and steers."""
    request = document["request"]
    check_envelope(reply, request["uid"])
    response = reply["response"]
    assert response["allowed"] is True
    assert set(response) <= {"uid", "allowed", "patchType", "patch"}
    patch = decoded_patch(reply)
    if patch is None:
        return
    assert request["operation"] == "CREATE"
    pod = request["object"]
    patched = apply_patch(pod, patch)
    assert patched["spec"]["schedulerName"] == "fargate-scheduler"
    name = patched["metadata"]["labels"][LABEL]
    profile = next(p for p in PROPERTY_PROFILES if p.name == name)
    labels = (pod.get("metadata") or {}).get("labels") or {}
    namespace = request.get("namespace") or pod["metadata"]["namespace"]
    assert profiles.matches(profile, namespace, labels)
    meta = pod.get("metadata") or {}
    assert (meta.get("annotations") or {}).get("eks.amazonaws.com/compute-type") != "ec2"
    assert all(o.get("kind") != "DaemonSet" for o in meta.get("ownerReferences") or [])


@settings(max_examples=300)
@given(JSON_VALUES)
def test_review_of_arbitrary_json_is_a_reply_or_malformed(document: Any) -> None:
    try:
        reply = mutation.review(document, PROPERTY_PROFILES)
    except mutation.MalformedReview as exc:
        assert str(exc)
        return
    _check_reply(document, reply)


@settings(max_examples=500)
@given(mutated_reviews())
def test_review_of_mutated_reviews_is_a_reply_or_malformed(case: tuple[Any, bool]) -> None:
    document, mutated = case
    try:
        reply = mutation.review(copy.deepcopy(document), PROPERTY_PROFILES)
    except mutation.MalformedReview as exc:
        assert mutated, f"a valid review was refused: {exc}"
        return
    _check_reply(document, reply)


@settings(max_examples=200)
@given(mutated_reviews(), st.integers(0, 20))
def test_profile_validation_of_anything_is_a_reply_or_malformed(
    case: tuple[Any, bool], count: int
) -> None:
    document, mutated = case
    try:
        reply = mutation.validate_profile(document, count)
    except mutation.MalformedReview:
        assert mutated
        return
    check_envelope(reply, document["request"]["uid"])
    assert reply["response"]["allowed"] is True  # these are pods, never profiles
