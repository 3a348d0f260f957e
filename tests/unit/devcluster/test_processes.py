"""Process handling: failures name their step and log, and nothing is ever orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vk_fargate import errors
from vk_fargate.devcluster import components, processes


def _command(
    tmp_path: Path, script: str, url: str = "http://127.0.0.1:1/health"
) -> components.Command:
    return components.Command("thing", ("/bin/sh", "-c", script), url, tmp_path / "thing.log")


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not processes.alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = processes.free_ports(5)
    assert len(set(ports)) == 5
    assert all(1024 < p < 65536 for p in ports)


async def test_a_process_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    command = _command(tmp_path, "echo 'fatal: boom' >&2; exit 3")
    process = processes.spawn(command, detach=False)
    with pytest.raises(errors.HarnessError) as caught:
        await processes.wait_healthy(process, command, ssl_context=False, timeout=10)
    assert caught.value.step == "start thing"
    assert caught.value.log == command.log
    assert "exited with code 3" in str(caught.value)
    assert "fatal: boom" in str(caught.value)


async def test_a_process_that_never_gets_healthy_times_out(tmp_path: Path) -> None:
    command = _command(tmp_path, "sleep 30")
    process = processes.spawn(command, detach=False)
    try:
        with pytest.raises(errors.HarnessError, match="not healthy after 0s"):
            await processes.wait_healthy(process, command, ssl_context=False, timeout=0.2)
    finally:
        processes.stop(process.pid, grace=1, child=process)


def test_a_missing_program_is_a_harness_error(tmp_path: Path) -> None:
    command = components.Command("ghost", (str(tmp_path / "nope"),), "", tmp_path / "g.log")
    with pytest.raises(errors.HarnessError, match="cannot execute"):
        processes.spawn(command, detach=False)


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    command = _command(tmp_path, f"sleep 60 & echo $! > {pidfile}; wait")
    process = processes.spawn(command, detach=False)
    while not pidfile.exists() or not pidfile.read_text().strip():
        time.sleep(0.01)
    grandchild = int(pidfile.read_text())
    processes.stop(process.pid, grace=2, child=process)
    assert process.returncode is not None
    assert _wait_gone(grandchild)


def test_stop_escalates_to_sigkill_after_grace(tmp_path: Path) -> None:
    command = _command(tmp_path, "trap '' TERM; while :; do sleep 0.05; done")
    process = processes.spawn(command, detach=False)
    time.sleep(0.2)  # let the shell install its trap
    began = time.monotonic()
    processes.stop(process.pid, grace=0.5, child=process)
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - began >= 0.5


def test_children_die_when_the_harness_process_is_killed(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed test run leaves no etcd or apiserver behind."""
    pidfile = tmp_path / "child.pid"
    program = textwrap.dedent(
        f"""
        import pathlib, time
        from vk_fargate.devcluster import components, processes
        log = pathlib.Path({str(tmp_path)!r}) / "s.log"
        cmd = components.Command("sleeper", ("sleep", "60"), "", log)
        p = processes.spawn(cmd, detach=False)
        pathlib.Path({str(pidfile)!r}).write_text(str(p.pid))
        time.sleep(60)
        """
    )
    harness = subprocess.Popen([sys.executable, "-c", program])
    try:
        while not pidfile.exists() or not pidfile.read_text():
            assert harness.poll() is None, "the harness process died early"
            time.sleep(0.02)
        child = int(pidfile.read_text())
        assert processes.alive(child)
        harness.kill()
        harness.wait()
        assert _wait_gone(child), "the child outlived its harness"
    finally:
        harness.kill()


def test_detached_children_outlive_their_starter(tmp_path: Path) -> None:
    """`vk-fargate dev up` returns while its cluster keeps running."""
    program = textwrap.dedent(
        f"""
        import pathlib
        from vk_fargate.devcluster import components, processes
        log = pathlib.Path({str(tmp_path)!r}) / "s.log"
        cmd = components.Command("sleeper", ("/bin/sleep", "60"), "", log)
        print(processes.spawn(cmd, detach=True).pid)
        """
    )
    starter = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    child = int(starter.stdout)
    try:
        time.sleep(0.2)
        assert processes.alive(child)
        assert os.getpgid(child) == child
        assert processes.program_of(child) == "/bin/sleep"
    finally:
        processes.stop(child, grace=1)
    assert _wait_gone(child)
