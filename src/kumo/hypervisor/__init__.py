"""The hypervisor interface (base.py), its libvirt implementation and a fake twin."""
