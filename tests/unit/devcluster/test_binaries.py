"""Where the control-plane binaries come from, and what is said when they are missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vk_fargate import errors, settings
from vk_fargate.devcluster import binaries

GO_MOD = Path(__file__).resolve().parents[3] / "hack" / "controlplane" / "go.mod"


def test_versions_agree_with_the_go_wrapper_module() -> None:
    text = GO_MOD.read_text()
    assert re.search(
        rf"^\tk8s\.io/kubernetes {binaries.KUBERNETES_VERSION}( // indirect)?$", text, re.M
    )
    assert re.search(
        rf"^\tgo\.etcd\.io/etcd/server/v3 {binaries.ETCD_VERSION}( // indirect)?$", text, re.M
    )


def test_every_staging_module_is_pinned_to_the_matching_tag() -> None:
    staging_tag = "v0." + binaries.KUBERNETES_VERSION.removeprefix("v1.")
    replaces = re.findall(r"^\t(k8s\.io/\S+) => (k8s\.io/\S+) (\S+)$", GO_MOD.read_text(), re.M)
    assert len(replaces) >= 31
    for source, target, version in replaces:
        assert source == target
        assert version == staging_tag, source


def test_missing_binaries_name_themselves_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    config = settings.Settings(bin_dir=tmp_path)
    with pytest.raises(errors.BinariesError) as caught:
        binaries.locate(config)
    message = str(caught.value)
    assert "kube-apiserver, kube-controller-manager, kube-scheduler missing" in message
    assert "vk-fargate dev build" in message
    assert caught.value.step == "find control-plane binaries"


def test_cache_is_keyed_by_version(tmp_path: Path) -> None:
    config = settings.Settings(cache=tmp_path)
    assert binaries.default_dir(config) == tmp_path / "controlplane" / "v1.36.3"


def test_kubectl_is_the_venv_one_not_path() -> None:
    import sys

    assert binaries.kubectl_path().parent == Path(sys.executable).parent


def test_build_without_go_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    config = settings.Settings(cache=tmp_path / "cache")
    with pytest.raises(errors.BinariesError, match="Go is not installed"):
        binaries.build(config, log=tmp_path / "build.log")


def test_concurrent_builds_run_the_script_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `dev build`s at once (two shells, or a test session beside one): the second
    waits for the first and finds the binaries, instead of racing it."""
    import concurrent.futures

    script = tmp_path / "build.sh"
    runs = tmp_path / "runs"
    script.write_text(
        f'echo run >> {runs}\nsleep 0.5\nmkdir -p "$1"\n'
        + "".join(
            f'printf "#!/bin/sh\\n" > "$1/{n}"; chmod +x "$1/{n}"\n' for n in binaries.PROGRAMS
        )
    )
    monkeypatch.setattr(binaries, "BUILD_SCRIPT", script)
    monkeypatch.setattr(binaries, "go_available", lambda: True)
    config = settings.Settings(cache=tmp_path / "cache")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        built = list(pool.map(lambda _: binaries.build(config, log=tmp_path / "log"), range(2)))
    assert built == [binaries.default_dir(config)] * 2
    assert runs.read_text() == "run\n"
