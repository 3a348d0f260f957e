"""The guest agent's build: a static binary (the guest has no libc), cached by source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vk_fargate.fleetd import guest, guestagent


@pytest.mark.skipif(
    shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file(),
    reason="Go builds the guest agent",
)
def test_the_agent_builds_static_once(tmp_path: Path) -> None:
    built = guestagent.binary(tmp_path)
    elf = built.read_bytes()
    assert elf.startswith(b"\x7fELF\x02")
    assert all(kind != 3 for kind, _, _ in guest._elf_segments(elf)), "has a PT_INTERP"
    stamp = built.stat().st_mtime_ns
    assert guestagent.binary(tmp_path) == built and built.stat().st_mtime_ns == stamp


def test_no_source_is_a_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guestagent, "SOURCE", tmp_path / "nowhere")
    with pytest.raises(guestagent.BuildError, match="no source"):
        guestagent.binary(tmp_path)
