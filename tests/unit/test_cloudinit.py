"""NoCloud data for a VM, against golden files."""

from __future__ import annotations

from kumo.provision.cloudinit import nocloud
from kumo.sim.cluster import vm_spec
from tests.unit.test_domain_xml import check_golden

SPEC = vm_spec(
    "web1",
    uuid="6b756d6f-0000-4000-8000-000000000001",
    ssh_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKumoTestKey ops@example",),
)


def test_nocloud_golden() -> None:
    meta, user = nocloud(SPEC)
    check_golden("nocloud-web1.meta-data", meta)
    check_golden("nocloud-web1.user-data", user)
    assert user.startswith("#cloud-config\n")


def test_runcmd_is_a_list_of_quoted_commands_after_the_keys() -> None:
    spec = SPEC.model_copy(update={"runcmd": ("dirty 64 25600", 'echo "hi" > /tmp/x')})
    _meta, user = nocloud(spec)
    assert user.endswith('runcmd:\n  - "dirty 64 25600"\n  - "echo \\"hi\\" > /tmp/x"\n')
    assert user.index("ssh_authorized_keys:") < user.index("runcmd:")
