"""Typed reads and writes of models in a ClusterStore (JSON values)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from kumo.store.base import ClusterStore, Entry, Put

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def decode(cls: type[M], entry: Entry) -> M:
    return cls.model_validate_json(entry.value)


def load(store: ClusterStore, cls: type[M], key: str) -> tuple[M, int] | None:
    """The model at ``key`` and its mod_revision (the token for compare-and-swap)."""
    entry = store.get(key)
    return (decode(cls, entry), entry.mod_revision) if entry else None


def load_all(store: ClusterStore, cls: type[M], prefix: str) -> dict[str, tuple[M, int]]:
    """Every model under ``prefix``, by the last part of its key."""
    return {e.key[len(prefix) :]: (decode(cls, e), e.mod_revision) for e in store.range(prefix)}


def put(key: str, model: BaseModel, lease: int = 0) -> Put:
    return Put(key, encode(model), lease)
