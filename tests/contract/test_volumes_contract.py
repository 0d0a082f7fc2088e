"""The Volumes contract: qemu-img on a temporary pool, and the fake."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kumo.storage.volumes import FakeVolumes, QemuImgVolumes, VolumeError, Volumes


@pytest.fixture(params=["qemu-img", "fake"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Volumes, str]:
    pool = tmp_path / "pool"
    (pool / "images").mkdir(parents=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(pool / "images" / "base.qcow2"), "64M"],
        check=True,
    )
    vols: Volumes = (
        QemuImgVolumes() if request.param == "qemu-img" else FakeVolumes({"images/base.qcow2"})
    )
    return vols, str(pool)


@pytest.mark.parametrize("clone", ["linked", "full"])
def test_create_exists_delete(setup: tuple[Volumes, str], clone: str) -> None:
    vols, pool = setup
    assert not vols.exists(pool, "web1")
    path = vols.create(pool, "web1", "images/base.qcow2", 1, clone)  # type: ignore[arg-type]
    assert path == f"{pool}/vms/web1.qcow2" and vols.exists(pool, "web1")
    vols.delete(pool, "web1")
    vols.delete(pool, "web1")  # idempotent
    assert not vols.exists(pool, "web1")


def test_missing_image_is_named(setup: tuple[Volumes, str]) -> None:
    vols, pool = setup
    with pytest.raises(VolumeError, match=r"images/nope\.qcow2 does not exist"):
        vols.create(pool, "web1", "images/nope.qcow2", 1, "linked")
    assert not vols.exists(pool, "web1")


def test_linked_clone_is_backed_by_image_and_grown(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    (pool / "images").mkdir(parents=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(pool / "images" / "base.qcow2"), "64M"],
        check=True,
    )
    path = QemuImgVolumes().create(str(pool), "v", "images/base.qcow2", 2, "linked")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", path], capture_output=True, text=True, check=True
        ).stdout
    )
    assert info["backing-filename"] == "../images/base.qcow2"
    assert info["virtual-size"] == 2 * 1024**3
    full = QemuImgVolumes().create(str(pool), "f", "images/base.qcow2", 1, "full")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", full], capture_output=True, text=True, check=True
        ).stdout
    )
    assert "backing-filename" not in info


def test_a_raw_disk_for_an_nbd_pool_is_its_own_file_and_goes_with_delete(
    setup: tuple[Volumes, str],
) -> None:
    vols, pool = setup
    path = vols.create(pool, "web1", "images/base.qcow2", 1, "linked", fmt="raw")
    assert path == f"{pool}/vms/web1.raw" == vols.path(pool, "web1", "raw")
    assert vols.exists(pool, "web1", "raw") and not vols.exists(pool, "web1")
    vols.delete(pool, "web1")
    assert not vols.exists(pool, "web1", "raw")


def test_a_raw_disk_is_a_sparse_full_copy_of_the_disk_size(tmp_path: Path) -> None:
    """An NBD export has a fixed size: the disk is raw (no qcow2 growing in it), with no
    backing file, at the VM's size, taking room only for the image's data."""
    pool = tmp_path / "pool"
    (pool / "images").mkdir(parents=True)
    base = pool / "images" / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 7 0 1M", str(base)], check=True, capture_output=True)
    path = QemuImgVolumes().create(str(pool), "v", "images/base.qcow2", 2, "linked", fmt="raw")
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", path], capture_output=True, text=True, check=True
        ).stdout
    )
    assert info["format"] == "raw" and "backing-filename" not in info
    assert info["virtual-size"] == 2 * 1024**3
    assert info["actual-size"] < 64 * 1024**2  # sparse
    with open(path, "rb") as f:
        assert f.read(16) == b"\x07" * 16  # the image's data, copied
