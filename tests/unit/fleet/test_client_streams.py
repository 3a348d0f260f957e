"""How the fleet client reads a refused stream upgrade: the typed errors, from the
status and the fleet's error headers."""

from __future__ import annotations

import urllib.parse

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from vk_fargate import errors
from vk_fargate.fleet import client


def _refused(status: int, code: str | None, message: str = "") -> errors.FleetError:
    headers: CIMultiDict[str] = CIMultiDict()
    if code is not None:
        headers[client.ERROR_CODE] = code
        headers[client.ERROR_MESSAGE] = urllib.parse.quote(message)
    exc = aiohttp.WSServerHandshakeError(
        None,  # type: ignore[arg-type]
        (),
        status=status,
        message="Invalid response status",
        headers=CIMultiDictProxy(headers),
    )
    return client._refused(exc)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "BadRequest", errors.BadRequest),
        (401, "Unauthorized", errors.Unauthorized),
        (404, "NotFound", errors.NotFound),
        (409, "Conflict", errors.Conflict),
        (429, "TooManySessions", errors.TooManySessions),
    ],
)
def test_each_refusal_is_its_typed_error_with_its_message(
    status: int, code: str, kind: type[errors.FleetError]
) -> None:
    error = _refused(status, code, "container app is not running: ü")
    assert type(error) is kind
    assert error.message == "container app is not running: ü"


def test_a_refusal_without_the_headers_goes_by_its_status() -> None:
    assert isinstance(_refused(503, None), errors.FleetUnavailable)
    plain = _refused(418, None)
    assert type(plain) is errors.FleetError
    assert "418" in plain.message
