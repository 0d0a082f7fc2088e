"""The test guest: a Debian kernel + busybox initramfs, and a golden qcow2 image of it.

Built once from distro packages and cached under ``<cache>/guest/<build-id>/``. The golden
image is a DOS-partitioned disk with syslinux in its MBR and boot partition, so the guest
boots through the BIOS from its own disk, as a real installed VM would.

What the guest does is in ``guestfiles/init``: it prints
``KUMO-GUEST boot=<boot-id> n=<counter> host=<hostname>`` on ttyS0 every second, serves the
same line over HTTP on port 80, takes its address by DHCP, reads a NoCloud seed and ships
the ``dirty MiB PAGES_PER_SECOND`` memory dirtier.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kumo.lab.shell import LabError, run

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
# Modules the guest loads at boot (with their dependencies): virtio devices, CD-ROM and
# the filesystems a NoCloud seed may use.
GUEST_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
    "ata_piix",
    "ahci",
    "sr_mod",
    "sd_mod",
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_iso8859-1",
    "button",
    "evdev",
)
DISK_MIB = 64
PARTITION_OFFSET = 1024 * 1024
GUEST_FILES = ("init", "udhcpc.script", "dirty.c", "syslinux.cfg")


@dataclass(frozen=True)
class GuestImage:
    """A built test guest: direct-boot kernel and initrd, and the BIOS-bootable golden disk."""

    directory: Path
    kernel: Path
    initrd: Path
    golden: Path
    kernel_release: str


def default_cache() -> Path:
    return Path(os.environ.get("KUMO_CACHE", "/var/cache/kumo"))


def _guest_source(name: str) -> bytes:
    return (resources.files("kumo.lab") / "guestfiles" / name).read_bytes()


def _kernel_package() -> tuple[str, str]:
    """The versioned kernel package behind the meta package, and its candidate version."""
    deps = run(["apt-cache", "depends", KERNEL_META_PACKAGE]).stdout
    names = [
        line.split(":", 1)[1].strip()
        for line in deps.splitlines()
        if line.strip().startswith("Depends: linux-image-")
    ]
    if not names:
        raise LabError(
            f"apt-cache knows no kernel behind {KERNEL_META_PACKAGE}: run `apt-get update`"
        )
    policy = run(["apt-cache", "policy", names[0]]).stdout
    version = next(
        (ln.split(":", 1)[1].strip() for ln in policy.splitlines() if "Candidate:" in ln), ""
    )
    return names[0], version


def build_id(kernel_package: str, kernel_version: str) -> str:
    """Identifies a guest build: the kernel and every guest source file."""
    h = hashlib.sha256(f"{kernel_package}={kernel_version}".encode())
    for name in GUEST_FILES:
        h.update(name.encode())
        h.update(_guest_source(name))
    h.update(repr(GUEST_MODULES).encode())
    return h.hexdigest()[:12]


def module_closure(modules_dep: str, wanted: tuple[str, ...]) -> list[str]:
    """Relative paths of the wanted modules and everything they depend on.

    ``modules_dep`` is the text of ``modules.dep``; module names match with ``-``/``_``
    folded, as modprobe does. Unknown names (built into the kernel) are skipped.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
        name = Path(path).name.removesuffix(".ko").replace("-", "_")
        by_name[name] = path
    seen: list[str] = []
    stack = [by_name[w.replace("-", "_")] for w in wanted if w.replace("-", "_") in by_name]
    while stack:
        path = stack.pop()
        if path in seen:
            continue
        seen.append(path)
        stack.extend(deps.get(path, []))
    return sorted(seen)


def find_guest(cache: Path | None = None) -> GuestImage | None:
    """The newest cached guest build, if any (no apt look-up: cheap, for `lab up`)."""
    root = (cache or default_cache()) / "guest"
    current = root / "current"
    if not current.is_symlink() and not current.is_dir():
        return None
    return _load(current.resolve())


def _load(directory: Path) -> GuestImage | None:
    meta = directory / "build.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    return GuestImage(
        directory=directory,
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.gz",
        golden=directory / "golden.qcow2",
        kernel_release=str(info["kernel_release"]),
    )


def build_guest(cache: Path | None = None, *, force: bool = False) -> GuestImage:
    """Build (or find in the cache) the test guest for the current kernel package."""
    cache = cache or default_cache()
    package, version = _kernel_package()
    target = cache / "guest" / build_id(package, version)
    if not force:
        found = _load(target)
        if found is not None:
            _point_current(cache, target)
            return found
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kumo-guest-", dir=cache) as tmp:
        work = Path(tmp)
        release = _fetch_kernel(package, work)
        _build_initramfs(work, release)
        _build_golden(work)
        (work / "out" / "build.json").write_text(
            json.dumps(
                {"kernel_package": package, "kernel_version": version, "kernel_release": release},
                indent=2,
            )
            + "\n"
        )
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        (work / "out").rename(target)
    _point_current(cache, target)
    image = _load(target)
    assert image is not None
    return image


def _point_current(cache: Path, target: Path) -> None:
    link = cache / "guest" / "current"
    tmp = link.with_name("current.new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    tmp.replace(link)


def _fetch_kernel(package: str, work: Path) -> str:
    debs = work / "debs"
    debs.mkdir()
    os.chmod(debs, 0o777)  # apt's download sandbox user must be able to write here
    run(["apt-get", "download", "-q", package], cwd=str(debs), timeout=600)
    deb = next(debs.glob("*.deb"))
    root = work / "kernel"
    run(["dpkg-deb", "-x", str(deb), str(root)], timeout=300)
    vmlinuz = next((root / "boot").glob("vmlinuz-*"))
    release = vmlinuz.name.removeprefix("vmlinuz-")
    out = work / "out"
    out.mkdir()
    shutil.copy(vmlinuz, out / "vmlinuz")
    return release


def _build_initramfs(work: Path, release: str) -> None:
    rootfs = work / "initramfs"
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "www", "mnt"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for name, dest, mode in (
        ("init", "init", 0o755),
        ("udhcpc.script", "etc/udhcpc.script", 0o755),
    ):
        (rootfs / dest).write_bytes(_guest_source(name))
        os.chmod(rootfs / dest, mode)
    (work / "dirty.c").write_bytes(_guest_source("dirty.c"))
    run(["gcc", "-static", "-O2", "-o", str(rootfs / "bin" / "dirty"), str(work / "dirty.c")])

    kmods = work / "kernel" / "lib" / "modules" / release
    # The package ships no modules.dep (its postinst runs depmod); make it here.
    run(["depmod", "-b", str(work / "kernel"), release])
    paths = module_closure((kmods / "modules.dep").read_text(), GUEST_MODULES)
    dest_mods = rootfs / "lib" / "modules" / release
    dep_lines = []
    dep_text = {
        line.split(":", 1)[0]: line
        for line in (kmods / "modules.dep").read_text().splitlines()
        if ":" in line
    }
    for rel in paths:
        (dest_mods / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(kmods / rel, dest_mods / rel)
        dep_lines.append(dep_text[rel])
    (dest_mods / "modules.dep").write_text("\n".join(dep_lines) + "\n")
    (rootfs / "etc" / "modules").write_text("\n".join(GUEST_MODULES) + "\n")

    files = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    cpio = run(
        ["sh", "-c", "busybox cpio -o -H newc | gzip -9 > ../out/initrd.gz"],
        input="\n".join(files) + "\n",
        cwd=str(rootfs),
        timeout=120,
    )
    del cpio


def _build_golden(work: Path) -> None:
    """A BIOS-bootable disk: syslinux MBR, one active FAT16 partition with the kernel."""
    out = work / "out"
    raw = work / "golden.raw"
    with raw.open("wb") as f:
        f.truncate(DISK_MIB * 1024 * 1024)
    run(["sfdisk", "-q", str(raw)], input="label: dos\nstart=2048, type=6, bootable\n")
    blocks = (DISK_MIB * 1024 * 1024 - PARTITION_OFFSET) // 1024
    run(
        [
            "mkfs.fat",
            "-F",
            "16",
            "-n",
            "KUMOGUEST",
            "--offset",
            str(PARTITION_OFFSET // 512),
            str(raw),
            str(blocks),
        ]
    )
    (work / "syslinux.cfg").write_bytes(_guest_source("syslinux.cfg"))
    image = f"{raw}@@{PARTITION_OFFSET}"
    for src in (out / "vmlinuz", out / "initrd.gz", work / "syslinux.cfg"):
        run(["mcopy", "-i", image, str(src), "::"])
    run(["syslinux", "--offset", str(PARTITION_OFFSET), "--install", str(raw)])
    mbr = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()
    with raw.open("r+b") as f:
        f.write(mbr[:440])
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out / "golden.qcow2")])
