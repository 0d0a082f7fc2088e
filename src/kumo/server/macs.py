"""MAC addresses of VM NICs: random in QEMU's ``52:54:00`` prefix, unique in the cluster.

Each address in use is a key under ``keys.MACS``, created (compare: absent) in the commit
that creates its VM and deleted in the commit that deletes the VM, so two VMs never share
one, even when placed by two API replicas at once. Pure: the caller says which addresses
are taken and where random bits come from (the service draws them from ``secrets``).
"""

from __future__ import annotations

from collections.abc import Callable

PREFIX = "52:54:00"
MAX_DRAWS = 64  # a miss this often means the 2^24 addresses are nearly all in use


class NoFreeMac(Exception):
    """No free address was drawn: the prefix's 2^24 addresses are (nearly) all in use."""


def mac_of(bits: int) -> str:
    low = bits & 0xFFFFFF
    return f"{PREFIX}:{low >> 16:02x}:{(low >> 8) & 0xFF:02x}:{low & 0xFF:02x}"


def draw_macs(count: int, taken: Callable[[str], bool], draw: Callable[[], int]) -> tuple[str, ...]:
    """``count`` distinct addresses, none of them ``taken``; ``draw`` gives 24 random bits,
    the part of an address after the prefix."""
    out: list[str] = []
    for _ in range(count):
        for _ in range(MAX_DRAWS):
            mac = mac_of(draw())
            if mac not in out and not taken(mac):
                out.append(mac)
                break
        else:
            raise NoFreeMac(f"no free MAC address in {PREFIX} after {MAX_DRAWS} draws")
    return tuple(out)
