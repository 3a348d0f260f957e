"""The exec request's options and the Status each outcome becomes, as the kubelet's."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from vk_fargate import errors
from vk_fargate.kubelet import remotecommand


def _query(*pairs: tuple[str, str]) -> MultiDict[str]:
    return MultiDict(pairs)


def test_options_keep_the_command_in_order_and_read_the_kubelets_flags() -> None:
    query = _query(
        ("command", "sh"),
        ("command", "-c"),
        ("command", "echo hi"),
        ("input", "1"),
        ("output", "1"),
    )
    options = remotecommand.parse_options(query)
    assert options == remotecommand.ExecOptions(
        ("sh", "-c", "echo hi"), stdin=True, stdout=True, stderr=False, tty=False
    )


def test_a_tty_drops_stderr_as_the_kubelet_does() -> None:
    query = _query(("command", "sh"), ("output", "1"), ("error", "1"), ("tty", "1"))
    options = remotecommand.parse_options(query)
    assert (options.stdout, options.stderr, options.tty) == (True, False, True)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (_query(("command", "true")), "you must specify at least 1 of stdin, stdout, stderr"),
        (_query(("output", "1")), "you must specify a command"),
        # stderr alone under a TTY is nothing left to stream
        (_query(("command", "x"), ("error", "1"), ("tty", "1")), "at least 1 of stdin"),
    ],
)
def test_bad_queries_are_400_with_the_reason(query: MultiDict[str], message: str) -> None:
    with pytest.raises(errors.BadRequest, match=message):
        remotecommand.parse_options(query)


def test_attach_needs_no_command() -> None:
    options = remotecommand.parse_options(_query(("output", "1")), attach=True)
    assert options.command == ()


def test_exit_zero_is_success() -> None:
    assert remotecommand.status(b'{"exit_code": 0}', ("true",)) == {
        "metadata": {},
        "status": "Success",
    }


def test_a_non_zero_exit_carries_its_code_as_the_exit_code_cause() -> None:
    got = remotecommand.status(b'{"exit_code": 3}', ("sh", "-c", "exit 3"))
    assert got["reason"] == "NonZeroExitCode"
    assert got["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert got["message"] == (
        "command terminated with non-zero exit code: "
        "error executing command [sh -c exit 3], exit code 3"
    )


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b'{"error": "exec: \\"nosuch\\": executable file not found in $PATH"}', "nosuch"),
        (b"not json", "unreadable status"),
        (b"[1]", "unreadable status"),
        (b"{}", "ended without a status"),
    ],
)
def test_anything_else_is_an_internal_error(payload: bytes, says: str) -> None:
    got = remotecommand.status(payload, ("x",))
    assert (got["status"], got["reason"], got["code"]) == ("Failure", "InternalError", 500)
    assert got["message"].startswith(
        "Internal error occurred: error executing command in container: "
    )
    assert says in got["message"]
