"""cloud-init NoCloud data for a VM: its name as hostname, its SSH keys, its runcmd. Pure
(golden-tested in tests/unit/test_cloudinit.py); the agent writes it to a seed ISO next to
the VM's disk."""

from __future__ import annotations

import json

from kumo.model.vm import VMSpec


def nocloud(spec: VMSpec) -> tuple[str, str]:
    """``(meta-data, user-data)``. The instance id is the VM's uuid, so cloud-init runs its
    per-instance steps once per VM, not again after a migration or a reboot."""
    meta = f"instance-id: {spec.uuid}\nlocal-hostname: {spec.name}\n"
    user = ["#cloud-config", f"hostname: {spec.name}", "manage_etc_hosts: true"]
    if spec.ssh_keys:
        user.append("ssh_authorized_keys:")
        user.extend(f"  - {key}" for key in spec.ssh_keys)
    if spec.runcmd:
        # JSON strings are YAML double-quoted scalars.
        user.append("runcmd:")
        user.extend(f"  - {json.dumps(cmd)}" for cmd in spec.runcmd)
    return meta, "\n".join(user) + "\n"
