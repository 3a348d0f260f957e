"""Tests of the volume layout on disk (the kubelet's atomic writer), the decoding of a
file set, the binds a container gets, and subPath resolution inside its volume."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.fleetd import helpers
from vk_fargate import errors
from vk_fargate.fleet import models
from vk_fargate.fleetd import subpaths, volumes


def file_set(*items: tuple[str, str], **fields: object) -> models.FileSet:
    return models.FileSet.model_validate(
        {
            "items": [
                {"path": p, "content": base64.b64encode(c.encode()).decode()} for p, c in items
            ],
            **fields,
        }
    )


def test_a_write_lays_out_the_atomic_writers_folders_and_links(tmp_path: Path) -> None:
    first = volumes.decode(file_set(("a", "1"), ("d/b", "2"), default_mode=0o600))
    volumes.write(tmp_path, first)
    data = str((tmp_path / "..data").readlink())
    assert data.startswith("..") and data != "..data"
    assert str((tmp_path / "a").readlink()) == "..data/a"
    assert str((tmp_path / "d").readlink()) == "..data/d"
    assert (tmp_path / "d" / "b").read_text() == "2"
    assert (tmp_path / data / "a").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / data).stat().st_mode & 0o777 == 0o755

    volumes.write(tmp_path, volumes.decode(file_set(("a", "3"), ("c", "4"))))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("..")) == ["a", "c"]
    assert (tmp_path / "a").read_text() == "3"
    assert not (tmp_path / data).exists(), "the old set is removed"
    assert not (tmp_path / "..data_tmp").exists()


def test_decoding_refuses_bad_base64_and_a_path_both_file_and_folder() -> None:
    bad = models.FileSet.model_validate({"items": [{"path": "k", "content": "%%"}]})
    with pytest.raises(errors.InvalidSpec, match=r"items\.0\.content: .* is not base64"):
        volumes.decode(bad)
    with pytest.raises(errors.InvalidSpec, match="'a' is a file and a folder of 'a/b'"):
        volumes.decode(file_set(("a/b", "x"), ("a", "y")))
    with pytest.raises(errors.InvalidSpec, match="given twice"):
        volumes.decode(file_set(("a", "x"), ("a", "y")))
    assert volumes.decode(file_set(("k", "v"))) == {"k": (b"v", 0o644)}


def test_split_blanks_contents_and_keeps_the_file_sets() -> None:
    spec = helpers.spec(
        helpers.shell("app", "true", volume_mounts=[{"name": "s", "mount_path": "/s"}]),
        volumes=[{"name": "s", "files": file_set(("k", "secret")).model_dump()}],
    )
    kept, given = volumes.split(spec)
    assert kept.volumes[0].files is not None and kept.volumes[0].files.items[0].content == ""
    assert given["s"].items[0].content == base64.b64encode(b"secret").decode()


def test_files_volumes_bind_read_only_and_parents_come_first(tmp_path: Path) -> None:
    app = helpers.shell(
        "app",
        "true",
        volume_mounts=[
            {"name": "cfg", "mount_path": "/a/b/c", "sub_path": "x"},
            {"name": "tmp", "mount_path": "/a"},
            {"name": "cfg", "mount_path": "/a/b"},
        ],
    )
    spec = helpers.spec(
        app, volumes=[{"name": "cfg", "files": {}}, {"name": "tmp", "empty_dir": {}}]
    )
    binds, sub_paths = volumes.mounts(spec, spec.containers[0], tmp_path)
    root = tmp_path / "volumes"
    assert binds == (
        ("/a", str(root / "tmp"), False),
        ("/a/b", str(root / "cfg"), True),
        ("/a/b/c", str(root / "cfg"), True),
    )
    assert sub_paths == [["/a/b/c", str(root / "cfg"), "x"]]


def test_a_sub_path_follows_links_but_never_out_of_its_volume(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    volumes.write(volume, volumes.decode(file_set(("conf/app.yaml", "x"))))
    data = str((volume / "..data").readlink())
    assert subpaths.resolve(volume, "conf/app.yaml") == volume / data / "conf" / "app.yaml"
    (volume / "escape").symlink_to("/etc")
    (volume / "up").symlink_to("../../..")
    assert subpaths.resolve(volume, "escape/passwd") == volume / "etc" / "passwd"
    assert subpaths.resolve(volume, "up/etc") == volume / "etc"
    (volume / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="too many levels"):
        subpaths.resolve(volume, "loop")


@pytest.mark.skipif(os.geteuid() != 0, reason="binds need root")
def test_a_missing_sub_path_is_made_with_the_volumes_mode_and_bound_privately(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    volume.chmod(0o777)
    private = tmp_path / "private"
    config = {"mounts": [{"destination": "/w", "source": str(volume)}, {"destination": "/x"}]}
    problem, held = subpaths.apply(config, [["/w", str(volume), "made/here"]], private)
    assert problem is None and held == [private / "0"]
    assert config["mounts"][0]["source"] == str(private / "0")
    (private / "0" / "seen").write_text("")  # the bind shows the made folder
    assert (volume / "made" / "here" / "seen").exists()
    assert (volume / "made" / "here").stat().st_mode & 0o777 == 0o777
    subpaths.release(held)
    assert held == [] and not (private / "0").exists()
    (volume / "file").write_text("")
    problem, held = subpaths.apply(config, [["/w", str(volume), "file/below"]], private)
    assert problem is not None and held == []
    assert problem.startswith("failed to prepare subPath for volumeMount at /w")


def test_a_link_swapped_in_after_the_resolution_is_not_followed(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    (volume / "a" / "b").mkdir(parents=True)
    found = subpaths.resolve(volume, "a/b")
    (volume / "a" / "b").rmdir()
    (volume / "a").rmdir()
    (volume / "a").symlink_to("/etc")
    with pytest.raises(OSError):
        subpaths.pinned(volume, found)
