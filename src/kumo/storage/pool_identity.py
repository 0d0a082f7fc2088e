"""Is this host's directory of a shared pool the pool's shared directory? Each shared pool has
a random id, recorded in the store (``/kumo/pool-ids/<pool>``) and written in the pool's
directory (``.kumo-pool-id``). A host reports the pool as available only when the file in its
own mount holds the recorded id; a host whose path is a plain local directory (the share not
mounted, or another share) fails the check instead of writing VM disks nobody else sees.

The first host to see a pool with no recorded id gives it one:
- in the directory, the id file is created once (written aside, then hard-linked into place:
  the link fails when the file exists, so two hosts on one directory keep the first file, and
  a reader never sees a half-written one); a file already there is adopted;
- in the store, the id is recorded by a compare-and-swap on "not recorded yet", so of two
  hosts racing on different directories one wins and the other fails the check.
Once an id is recorded, no host writes the file again: a host that finds it missing only
says so (its directory is not the shared one, or the file was removed).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kumo.model.host import Pool, PoolIdentity
from kumo.store import keys
from kumo.store.base import ClusterStore, Compare
from kumo.store.records import load, put

ID_FILE = ".kumo-pool-id"
_ID = re.compile(r"[0-9a-f]{32}")


class PoolIdError(Exception):
    """The pool's directory or its id file cannot be read or written; says which and why."""


class PoolIds(Protocol):
    """The id file in a pool's directory, as this host sees it (its own mounts)."""

    def read(self, pool_path: str) -> str | None:
        """The id in the file; None when the directory has none."""
        ...

    def create(self, pool_path: str, pool_id: str) -> str:
        """Write ``pool_id`` into the directory unless an id file is there already; return
        the id the file holds afterwards (ours, or the one found)."""
        ...


class DirPoolIds:
    """Id files on this host's filesystem. ``root`` is prepended to pool paths: "/" for an
    agent; tests give each simulated host its own root, as mount namespaces do."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def _dir(self, pool_path: str) -> Path:
        return Path(self.root) / pool_path.lstrip("/")

    def read(self, pool_path: str) -> str | None:
        d = self._dir(pool_path)
        if not d.is_dir():
            raise PoolIdError(f"{pool_path} is not a directory")
        try:
            text = (d / ID_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PoolIdError(f"cannot read {pool_path}/{ID_FILE}: {exc}") from exc
        if not _ID.fullmatch(text):
            raise PoolIdError(f"{pool_path}/{ID_FILE} does not hold a pool id: {text[:40]!r}")
        return text

    def create(self, pool_path: str, pool_id: str) -> str:
        d = self._dir(pool_path)
        if not d.is_dir():
            raise PoolIdError(f"{pool_path} is not a directory")
        aside = d / f"{ID_FILE}.{pool_id}"
        try:
            with open(aside, "w") as f:
                f.write(pool_id + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another host was first: its id stands
                os.link(aside, d / ID_FILE)
        except OSError as exc:
            raise PoolIdError(f"cannot write {pool_path}/{ID_FILE}: {exc}") from exc
        finally:
            aside.unlink(missing_ok=True)
        found = self.read(pool_path)
        if found is None:
            raise PoolIdError(f"{pool_path}/{ID_FILE} vanished just after it was written")
        return found


class FakePoolIds:
    """Id files in memory: one instance is one directory tree (hosts sharing a pool share the
    instance; a host with its own local directory gets its own)."""

    def __init__(self, dirs: set[str] | None = None) -> None:
        self.dirs = dirs  # None: every directory exists
        self.files: dict[str, str] = {}

    def _check(self, pool_path: str) -> None:
        if self.dirs is not None and pool_path not in self.dirs:
            raise PoolIdError(f"{pool_path} is not a directory")

    def read(self, pool_path: str) -> str | None:
        self._check(pool_path)
        return self.files.get(pool_path)

    def create(self, pool_path: str, pool_id: str) -> str:
        self._check(pool_path)
        return self.files.setdefault(pool_path, pool_id)


@dataclass(frozen=True)
class PoolCheck:
    pool: str
    available: bool
    problem: str = ""  # why not, naming the pool, the path and the ids


def verify(pool: Pool, recorded: PoolIdentity, found: str | None) -> PoolCheck:
    """Compare the id in this host's directory with the recorded one."""
    if found == recorded.id:
        return PoolCheck(pool.name, True)
    if found is None:
        why = f"{pool.path} has no {ID_FILE}"
    else:
        why = f"{pool.path}/{ID_FILE} holds id {found}"
    return PoolCheck(
        pool.name,
        False,
        f"pool {pool.name}: {why}, but the pool's id is {recorded.id} (recorded by "
        f"{recorded.recorded_by}): {pool.path} here is not the pool's shared directory "
        f"(is the share mounted?)",
    )


def check_shared_pool(
    store: ClusterStore,
    pool: Pool,
    ids: PoolIds,
    host: str,
    new_id: Callable[[], str],
    now: float,
) -> PoolCheck:
    """Whether ``pool`` (a shared-dir pool) is this host's shared directory; gives the pool
    its id when no host has yet (see the module's docstring)."""
    key = keys.POOL_IDS + pool.name
    recorded = load(store, PoolIdentity, key)
    try:
        if recorded is not None:
            return verify(pool, recorded[0], ids.read(pool.path))
        in_dir = ids.create(pool.path, new_id())
    except PoolIdError as exc:
        return PoolCheck(pool.name, False, f"pool {pool.name}: {exc}")
    mine = PoolIdentity(pool=pool.name, id=in_dir, recorded_by=host, at=now)
    if store.commit([Compare(key, 0)], [put(key, mine)]) is not None:
        return PoolCheck(pool.name, True)
    recorded = load(store, PoolIdentity, key)  # another host recorded an id first
    if recorded is None:
        return PoolCheck(pool.name, False, f"pool {pool.name}: its id changed meanwhile")
    return verify(pool, recorded[0], in_dir)
