"""The termination message's pure parts (``fleetd.hooks``): the bound file, its limit,
and FallbackToLogsOnError's tail of the CRI log with the kubelet's limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vk_fargate.fleetd import crilog, hooks


def _log(path: Path, lines: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        writer = crilog.Writer(out, "stdout")
        writer.feed("".join(f"{line}\n" for line in lines))
        writer.close()
    return path


def test_the_message_file_is_bound_once_and_world_writable(tmp_path: Path) -> None:
    config: dict[str, Any] = {"mounts": [{"destination": "/proc", "type": "proc"}]}
    first = tmp_path / "termination" / "app-0"
    hooks.bind_message_file(config, "/dev/termination-log", first)
    second = tmp_path / "termination" / "app-1"
    hooks.bind_message_file(config, "/tmp/end", second)
    assert config["mounts"] == [
        {"destination": "/proc", "type": "proc"},
        {
            "destination": "/tmp/end",
            "type": "bind",
            "source": str(second),
            "options": ["rbind", "rw"],
        },
    ]
    assert second.read_bytes() == b""
    assert second.stat().st_mode & 0o777 == 0o666


def test_the_file_is_the_message_cut_at_4096_bytes(tmp_path: Path) -> None:
    source = tmp_path / "msg"
    source.write_text("x" * 5000)
    log = _log(tmp_path / "0.log", ["ignored"])
    assert hooks.message(source, "FallbackToLogsOnError", 1, log) == "x" * 4096


def test_a_link_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("secret")
    (tmp_path / "msg").symlink_to(tmp_path / "secret")
    assert hooks.message(tmp_path / "msg", "File", 1, tmp_path / "none.log") is None


def test_fallback_to_logs_only_on_error_and_an_empty_file(tmp_path: Path) -> None:
    source = tmp_path / "msg"
    source.write_text("")
    log = _log(tmp_path / "0.log", ["one", "two"])
    assert hooks.message(source, "FallbackToLogsOnError", 2, log) == "one\ntwo\n"
    assert hooks.message(source, "FallbackToLogsOnError", 0, log) is None
    assert hooks.message(source, "File", 2, log) is None


def test_the_log_tail_is_80_lines_then_2048_bytes(tmp_path: Path) -> None:
    log = _log(tmp_path / "0.log", [f"line {n}" for n in range(100)])
    assert hooks.log_tail(log) == "".join(f"line {n}\n" for n in range(20, 100))
    wide = _log(tmp_path / "1.log", [f"{n:03d}" + "y" * 96 for n in range(50)])
    tail = hooks.log_tail(wide)
    assert len(tail.encode()) == 2048
    assert tail.endswith("049" + "y" * 96 + "\n")
