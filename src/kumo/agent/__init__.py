"""The host agent: registers its host under an etcd lease and makes the VMs placed on it
real in libvirt (composition root: agent.py; decisions: decide.py)."""
