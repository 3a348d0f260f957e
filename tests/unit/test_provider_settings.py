"""`vk-fargate run`'s settings: the fleet is reached over TLS unless it is on loopback or
plain HTTP is asked for, and a bad setting or CA bundle stops the start with a message
(ConfigError), not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from vk_fargate import app, cli, errors, settings


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(f"VK_FARGATE_{name.upper()}", value)
    with pytest.raises(errors.ConfigError) as caught:
        settings.provider()
    return str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8400", "http://localhost:8400", "http://[::1]:8400", "https://fleet:8400"],
)
def test_tls_or_loopback_fleet_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("VK_FARGATE_FLEET_URL", url)
    assert settings.provider().fleet_url == url


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8400", "http://fleetd.vk-fargate.svc:8400", "http://[::]:8400"]
)
def test_plain_http_beyond_loopback_is_refused_unless_asked_for(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    message = refused(monkeypatch, fleet_url=url)
    assert "without TLS" in message
    assert "https://" in message and "VK_FARGATE_FLEET_INSECURE=true" in message
    monkeypatch.setenv("VK_FARGATE_FLEET_INSECURE", "true")
    assert settings.provider().fleet_insecure is True


@pytest.mark.parametrize("url", ["fleet:8400", "ftp://fleet:8400", "https://", "127.0.0.1"])
def test_a_fleet_url_that_is_no_http_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    assert "fleet_url must be http(s)://HOST[:PORT]" in refused(monkeypatch, fleet_url=url)


def test_a_ca_bundle_for_a_plain_http_fleet_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, fleet_url="http://127.0.0.1:8400", fleet_ca_file="/ca.crt")
    assert "fleet_ca_file is set but fleet_url" in message and "use https://" in message


def test_a_malformed_setting_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, kubelet_port="99999")
    assert "VK_FARGATE_KUBELET_PORT: Input should be less than or equal to 65535" in message


def test_the_cli_reports_a_refused_setting_as_an_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VK_FARGATE_FLEET_URL", "http://10.0.0.5:8400")
    assert cli.main(["run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: invalid VK_FARGATE_* settings:") and "without TLS" in err
    assert "Traceback" not in err


async def test_a_missing_ca_bundle_stops_the_provider_before_it_connects(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    cfg = settings.ProviderSettings(
        fleet_url="https://fleet.example:8400",
        fleet_token_file=token,
        fleet_ca_file=tmp_path / "missing.crt",
        kubeconfig=tmp_path / "no-kubeconfig",
    )
    with pytest.raises(errors.ConfigError, match="cannot load the fleet CA bundle"):
        await app.run(cfg)
