"""NoCloud data for a VM, against golden files."""

from __future__ import annotations

import yaml

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
    """Double-quoted, one a line: the lab's test guest reads runcmd with sed, not YAML."""
    spec = SPEC.model_copy(update={"runcmd": ("dirty 64 25600", 'echo "hi" > /tmp/x')})
    _meta, user = nocloud(spec)
    assert user.endswith('runcmd:\n  - "dirty 64 25600"\n  - "echo \\"hi\\" > /tmp/x"\n')
    assert user.index("ssh_authorized_keys:") < user.index("runcmd:")


def test_strings_that_look_like_yaml_stay_strings() -> None:
    """A key with ': ' became a mapping when the YAML was written by string formatting."""
    keys = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKumo x: y", "ssh-rsa AAAAB3 #not-a-comment")
    runcmd = (
        "echo 'a: b' > /tmp/x",
        'printf "%s\\n" "q: \\"r\\"" - [x]',
        "key: value",
        "- dash first",
        "tab\there, newline\nthere",
    )
    name = "yes"  # YAML 1.1 reads a bare yes as true
    spec = SPEC.model_copy(update={"name": name, "ssh_keys": keys, "runcmd": runcmd})
    meta, user = nocloud(spec)
    assert user.startswith("#cloud-config\n")
    assert yaml.safe_load(user) == {
        "hostname": name,
        "manage_etc_hosts": True,
        "ssh_authorized_keys": list(keys),
        "runcmd": list(runcmd),
    }
    assert yaml.safe_load(meta) == {"instance-id": SPEC.uuid, "local-hostname": name}


def test_long_keys_stay_on_one_line() -> None:
    """The lab's test guest reads keys a line each: no folding, however long the key."""
    key = "ssh-rsa " + "A" * 700 + " a comment" * 20
    _meta, user = nocloud(SPEC.model_copy(update={"ssh_keys": (key,)}))
    assert f"  - {key}\n" in user
