"""VM disks in a directory pool: ``<pool>/vms/<vm>.qcow2``, a linked clone (qcow2 with the
image as backing file) or a full copy of an image, grown to the VM's disk size; or, in a pool
exported over NBD (``Pool.nbd``: an export has a fixed size, a qcow2 could not grow in it),
``<pool>/vms/<vm>.raw``, a sparse raw full copy.

The agent uses :class:`Volumes`; :class:`QemuImgVolumes` does the work with ``qemu-img``,
:class:`FakeVolumes` keeps it in memory. Both pass tests/contract/test_volumes_contract.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Literal, Protocol

from kumo.provision.seed import write_nocloud_iso


class VolumeError(Exception):
    """A disk could not be made or removed; the message names the file and the cause."""


DiskFormat = Literal["qcow2", "raw"]


class Volumes(Protocol):
    def path(self, pool_path: str, vm: str, fmt: DiskFormat = "qcow2") -> str: ...

    def exists(self, pool_path: str, vm: str, fmt: DiskFormat = "qcow2") -> bool: ...

    def create(
        self,
        pool_path: str,
        vm: str,
        image: str,
        size_gib: int,
        clone: Literal["linked", "full"],
        fmt: DiskFormat = "qcow2",
    ) -> str:
        """Make the VM's disk from ``image`` (a path inside the pool); returns its path. A raw
        disk is always a full copy."""
        ...

    def delete(self, pool_path: str, vm: str) -> None:
        """Remove the VM's disk (either format) and its seed (any may be missing)."""
        ...

    def seed_path(self, pool_path: str, vm: str) -> str: ...

    def write_seed(self, pool_path: str, vm: str, meta_data: str, user_data: str) -> str:
        """Write the VM's cloud-init NoCloud seed ISO; returns its path."""
        ...


def _disk_path(pool_path: str, vm: str, fmt: DiskFormat = "qcow2") -> str:
    return str(Path(pool_path) / "vms" / f"{vm}.{fmt}")


def _seed_path(pool_path: str, vm: str) -> str:
    return str(Path(pool_path) / "vms" / f"{vm}-seed.iso")


class QemuImgVolumes:
    def path(self, pool_path: str, vm: str, fmt: DiskFormat = "qcow2") -> str:
        return _disk_path(pool_path, vm, fmt)

    def exists(self, pool_path: str, vm: str, fmt: DiskFormat = "qcow2") -> bool:
        return os.path.exists(_disk_path(pool_path, vm, fmt))

    def _run(self, args: list[str]) -> str:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise VolumeError(f"`{' '.join(args)}` failed: {proc.stderr.strip()}")
        return proc.stdout

    def create(
        self,
        pool_path: str,
        vm: str,
        image: str,
        size_gib: int,
        clone: Literal["linked", "full"],
        fmt: DiskFormat = "qcow2",
    ) -> str:
        src = Path(pool_path) / image
        if not src.is_file():
            raise VolumeError(f"image {src} does not exist in pool {pool_path}")
        info = json.loads(self._run(["qemu-img", "info", "--output=json", str(src)]))
        src_fmt = str(info.get("format", "qcow2"))
        virtual = int(info.get("virtual-size", 0))
        size = max(virtual, size_gib * 1024**3)
        dest = Path(_disk_path(pool_path, vm, fmt))
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".partial")
        if fmt == "raw":  # sparse: only the image's data takes room
            self._run(["qemu-img", "convert", "-O", "raw", "-f", src_fmt, str(src), str(tmp)])
            self._run(["qemu-img", "resize", "-q", "-f", "raw", str(tmp), str(size)])
        elif clone == "linked":
            # A relative backing path keeps the clone valid wherever the pool is mounted.
            backing = os.path.relpath(src, dest.parent)
            self._run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    src_fmt,
                    "-b",
                    backing,
                    str(tmp),
                    str(size),
                ]
            )
        else:
            self._run(["qemu-img", "convert", "-O", "qcow2", "-f", src_fmt, str(src), str(tmp)])
            self._run(["qemu-img", "resize", "-q", str(tmp), str(size)])
        tmp.replace(dest)
        return str(dest)

    def delete(self, pool_path: str, vm: str) -> None:
        disks = (_disk_path(pool_path, vm, "qcow2"), _disk_path(pool_path, vm, "raw"))
        for path in (*disks, _seed_path(pool_path, vm)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise VolumeError(f"cannot remove {path}: {exc}") from exc

    def seed_path(self, pool_path: str, vm: str) -> str:
        return _seed_path(pool_path, vm)

    def write_seed(self, pool_path: str, vm: str, meta_data: str, user_data: str) -> str:
        path = Path(_seed_path(pool_path, vm))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_nocloud_iso(path, meta_data=meta_data, user_data=user_data)
        except OSError as exc:
            raise VolumeError(f"cannot write seed {path}: {exc}") from exc
        return str(path)


class FakeVolumes:
    def __init__(self, images: set[str] | None = None) -> None:
        self.images = images  # None: every image exists
        self.disks: dict[str, tuple[str, int, str]] = {}
        self.seeds: dict[str, tuple[str, str]] = {}

    def path(self, pool_path: str, vm: str, fmt: DiskFormat = "qcow2") -> str:
        return _disk_path(pool_path, vm, fmt)

    def exists(self, pool_path: str, vm: str, fmt: DiskFormat = "qcow2") -> bool:
        return _disk_path(pool_path, vm, fmt) in self.disks

    def create(
        self,
        pool_path: str,
        vm: str,
        image: str,
        size_gib: int,
        clone: Literal["linked", "full"],
        fmt: DiskFormat = "qcow2",
    ) -> str:
        if self.images is not None and image not in self.images:
            raise VolumeError(f"image {Path(pool_path) / image} does not exist in pool {pool_path}")
        p = _disk_path(pool_path, vm, fmt)
        self.disks[p] = (image, size_gib, "full" if fmt == "raw" else clone)
        return p

    def delete(self, pool_path: str, vm: str) -> None:
        for fmt in ("qcow2", "raw"):
            self.disks.pop(_disk_path(pool_path, vm, fmt), None)
        self.seeds.pop(_seed_path(pool_path, vm), None)

    def seed_path(self, pool_path: str, vm: str) -> str:
        return _seed_path(pool_path, vm)

    def write_seed(self, pool_path: str, vm: str, meta_data: str, user_data: str) -> str:
        p = _seed_path(pool_path, vm)
        self.seeds[p] = (meta_data, user_data)
        return p
