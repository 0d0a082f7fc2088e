"""The cluster store: etcd in production, an in-memory twin for simulation and unit tests.
Both obey tests/contract/test_store_contract.py."""

from kumo.store.base import (
    ClusterStore,
    Compare,
    Delete,
    Entry,
    LeaseExpired,
    Put,
    StoreUnavailable,
    Watch,
    WatchEvent,
)

__all__ = [
    "ClusterStore",
    "Compare",
    "Delete",
    "Entry",
    "LeaseExpired",
    "Put",
    "StoreUnavailable",
    "Watch",
    "WatchEvent",
]
