"""Self-fencing: a host that may have lost its lease destroys its HA domains itself, before
the leader can fence it and run them elsewhere (docs/adr/0008-high-availability.md).

The agent renews its lease every second (TTL 5 s). Its own deadline is the TTL, less a
margin, after the start of its last successful renewal, on its own monotonic clock; the store
cannot expire the lease before that. Past the deadline the agent may be cut off, and the
leader will fence the host once the lease has expired and a grace has passed: so before
the deadline ends, every domain whose metadata says HA restarts it elsewhere is destroyed
(QEMU gone, the disk's virtlockd lease freed, the definition and the disk kept).

The leader may run the VMs elsewhere the TTL and a grace (2 s) after the renewal, so the
fence must be quick: libvirt's destroy asks QEMU to end (SIGTERM), waits, and cleans up, one
domain at a time: on a loaded host, seconds each, and the third of three guests outlived the
leader's grace (a double run in the 100-fault chaos run). So the agent first kills every HA
guest's QEMU itself with SIGKILL, from libvirt's runtime files (``kill``, the watchdog's
``bite``), which needs nothing from libvirtd; then libvirt's destroys, side by side, clean up.

Unless the store is down for everyone: then nobody can fence this host or run its VMs
elsewhere, and killing them would only turn an etcd outage into a cluster-wide outage. The
agent asks its peers (their agents' ``/v1/lease``) whether they hold a lease; while a strict
majority of the other hosts answers that it has lost its lease too, and none answers that it
holds one, it holds. As soon as one peer holds a lease again (etcd is back for it) while this
host has none, it fences at once: etcd gives every lease a full TTL when it comes back, and
the leader waits the TTL and the grace on top, so a peer's answer arrives well before.

A fresh agent that cannot reach the store has no lease of its own, but the previous
process's may still stand: its deadline is counted from its own start. With no peers known
(it never read the host list) it cannot ask, and fences.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kumo.clock import Clock
from kumo.hypervisor.base import Domain, DomainState, Hypervisor, HypervisorError
from kumo.store.lease import LeaseKeeper

log = logging.getLogger("kumo.agent")

# A peer's answer: True it holds a lease, False it has lost it too, None no answer.
PeerAnswer = bool | None
AskPeer = Callable[[str], PeerAnswer]  # host name -> its answer


def store_down_for_all(answers: Sequence[PeerAnswer]) -> bool:
    """Whether peers' answers say the store is out of reach for most of the cluster: a strict
    majority of them lost their lease too, and none holds one. Pure."""
    if any(a is True for a in answers):
        return False
    return 2 * sum(a is False for a in answers) > len(answers) > 0


@dataclass(frozen=True)
class Fenced:
    at: float  # wall clock
    domains: tuple[str, ...]
    why: str


class SelfFence:
    def __init__(
        self,
        host: str,
        keeper: LeaseKeeper,
        hv: Hypervisor,
        clock: Clock,
        ask_peer: AskPeer,
        margin_s: float = 1.0,
        kill: Callable[[], list[str]] = lambda: [],
    ) -> None:
        self.host = host
        self.keeper = keeper
        self.hv = hv
        self.clock = clock
        self.ask_peer = ask_peer
        self.kill = kill  # SIGKILL to every HA guest's QEMU here; returns their names
        self.started = clock.monotonic()
        self.first_deadline = started_deadline(self.started, keeper.ttl, margin_s)
        self.peers: tuple[str, ...] | None = None  # the other hosts; None: never read
        self.holding = False  # the store is down for most: holding (logged once)
        self.done: list[Fenced] = []  # what it destroyed, for the events written later

    def lease_may_be_gone(self) -> bool:
        if self.keeper.lease:
            return not self.keeper.valid
        return self.clock.monotonic() >= self.first_deadline  # see the module docstring

    def _peer_answers(self) -> list[PeerAnswer]:
        peers = self.peers or ()
        if len(peers) <= 1:
            return [self.ask_peer(p) for p in peers]
        with ThreadPoolExecutor(max_workers=min(8, len(peers))) as pool:
            return list(pool.map(self.ask_peer, peers))

    def check(self) -> Fenced | None:
        """Run often (every quarter second): destroy the HA domains here when the lease may be
        gone and the store is not down for everyone. Returns what it did, if anything."""
        if not self.lease_may_be_gone():
            self.holding = False
            return None
        if self.peers is not None and not self.peers:
            return None  # the only host: nobody else could run its VMs
        if self.peers is not None and store_down_for_all(self._peer_answers()):
            if not self.holding:
                log.warning(
                    "host %s: lease may be gone, but most hosts lost the store too: holding "
                    "the VMs (nobody can fence this host or run them elsewhere)",
                    self.host,
                )
            self.holding = True
            return None
        self.holding = False
        return self.fence_now("no lease: the leader may fence this host")

    def fence_now(self, why: str) -> Fenced | None:
        """Kill every HA guest here, then destroy every running or paused HA domain
        (definitions and disks kept)."""
        try:
            killed = self.kill()
        except OSError as exc:  # the runtime files unreadable: libvirt's destroy still comes
            log.error("host %s: self-fence could not kill the HA guests: %s", self.host, exc)
            killed = []
        try:
            doms = [
                d
                for d in self.hv.domains()
                if d.ha and d.state in (DomainState.RUNNING, DomainState.PAUSED)
            ]
        except HypervisorError as exc:
            log.error("host %s: self-fence cannot list domains: %s", self.host, exc)
            doms = []
        gone = set(killed)
        if doms:
            with ThreadPoolExecutor(max_workers=min(8, len(doms))) as pool:
                for d, err in zip(doms, pool.map(self._destroy, doms), strict=True):
                    if err is None:
                        gone.add(d.name)
                    else:
                        log.error(
                            "host %s: self-fence could not destroy %s: %s", self.host, d.name, err
                        )
        if not gone:
            return None
        done = Fenced(self.clock.now(), tuple(sorted(gone)), why)
        log.warning(
            "host %s self-fenced (%s): destroyed %s", self.host, why, ", ".join(done.domains)
        )
        self.done.append(done)
        return done

    def _destroy(self, d: Domain) -> HypervisorError | None:
        try:
            self.hv.destroy(d.name)
        except HypervisorError as exc:
            return exc
        return None


def started_deadline(started: float, ttl: float, margin_s: float) -> float:
    return started + ttl - margin_s
