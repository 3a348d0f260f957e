"""runc's failure as an exec reports it, read from runc's JSON log."""

from __future__ import annotations

import json
from pathlib import Path

from vk_fargate.fleetd import execs


def _log(path: Path, *entries: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def test_runc_error_is_its_last_error_without_runc_prefixes(tmp_path: Path) -> None:
    log = _log(
        tmp_path / "runc.log",
        {"level": "warning", "msg": "something to ignore"},
        {
            "level": "error",
            "msg": 'exec failed: unable to start container process: exec: "nosuch": '
            "executable file not found in $PATH",
        },
    )
    assert execs.runc_error(log) == 'exec: "nosuch": executable file not found in $PATH'


def test_no_error_logged_is_none(tmp_path: Path) -> None:
    assert execs.runc_error(tmp_path / "missing.log") is None
    log = _log(tmp_path / "runc.log", {"level": "info", "msg": "fine"})
    log.write_text(log.read_text() + "not json\n")
    assert execs.runc_error(log) is None
