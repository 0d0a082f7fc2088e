"""cloud-init NoCloud data for a VM: its name as hostname, its SSH keys, its runcmd. Pure
(golden-tested in tests/unit/test_cloudinit.py); the agent writes it to a seed ISO next to
the VM's disk.

Emitted by a YAML library, never by string formatting: a key such as ``ssh-ed25519 AAAA x: y``
must stay one string, not become a mapping."""

from __future__ import annotations

from typing import Any

import yaml

from kumo.model.vm import VMSpec


class _Command(str):
    """A runcmd entry: always a double-quoted scalar (the lab's test guest reads them so)."""

    __slots__ = ()


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as cloud-init's documentation writes them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _double_quoted(dumper: yaml.SafeDumper, data: _Command) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style='"')


_Dumper.add_representer(_Command, _double_quoted)


def _dump(data: dict[str, Any]) -> str:
    # No line folding: the lab guest reads the file line by line.
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=float("inf"))


def nocloud(spec: VMSpec) -> tuple[str, str]:
    """``(meta-data, user-data)``. The instance id is the VM's uuid, so cloud-init runs its
    per-instance steps once per VM, not again after a migration or a reboot."""
    meta = _dump({"instance-id": spec.uuid, "local-hostname": spec.name})
    user: dict[str, Any] = {"hostname": spec.name, "manage_etc_hosts": True}
    if spec.ssh_keys:
        user["ssh_authorized_keys"] = list(spec.ssh_keys)
    if spec.runcmd:
        user["runcmd"] = [_Command(cmd) for cmd in spec.runcmd]
    return meta, "#cloud-config\n" + _dump(user)
