"""Benchmark: how long the leader takes to decide and commit the recovery of a dead host's
HA VMs in a big cluster (issue #10 item 9: 1,000 hosts, 20,000 VMs, 50 HA VMs on the dead
host; target < 1 s).

In memory, with the server's own parts: a ``MemoryStore``, the watch-fed ``StoreCache`` that
`kumo server` reads through, and ``ClusterService`` (its ``HAManager`` and ``Placer``). The
hosts are registered with one agent lease each (kept alive on a fake monotonic clock, the
store's lease clock too); the VMs are written straight into the store as the scheduler and
the agents would have written them (spec, placement, running status), spread over the hosts
under the scheduler's capacity and group rules, with mixed sizes, HA priorities, allowed-host
lists, preferred hosts, anti-affinity and affinity groups. Some hosts ("victims") hold 50 HA
VMs and 5 ``ha: off`` VMs each. Each run kills two fresh victims (their lease revoked):

  * ``recover``: the first is fenced as the leader fences (the ``FencedHost`` record written
    on the absence of its alive key), then ``HAManager.recover(fence)`` is timed;
  * ``run``: for the second, one ``HAManager.run`` pass sees the lease gone, the fake clock
    moves past the grace, and the next ``run`` pass, which fences and recovers, is timed.

Both check that every HA VM of the dead host is placed on a live host. The leader's pass
when nothing is dead (every pass pays it) is timed before the first kill, and again after
the runs with the dead hosts still fenced (each pass looks at their VMs again). Commits go
to the in-memory store: etcd would add a round trip (a few ms) per transaction, two
transactions for 50 VMs (25 a transaction). The first recovery after the leader started
builds every VM's scheduler demand once (``Placer.placed`` memoises them); it is reported on
its own too. The maxima include Python's full garbage collections of a heap this size,
which pause whatever runs at that moment.

    .venv/bin/python -m bench.ha_scale [--hosts 1000 --vms 20000 --runs 7]
    .venv/bin/python -m bench.ha_scale --hosts 50 --vms 1000 --runs 2  # smoke

Prints a table and writes bench/results/ha_scale.json. Building the cluster takes most of
the time (about a minute at the defaults on 2 cores). ``--profile`` prints where a
recovery's time goes (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import platform
import pstats
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from kumo.model.ha import FencedHost, HAMode, HASettings, HASpec
from kumo.model.host import HostRecord
from kumo.model.vm import Placement, PlacementRules, VMSpec, VMState, VMStatus
from kumo.scheduler.placement import Policy
from kumo.server.ha import ACTOR, Recovered, wants_recovery
from kumo.server.service import ClusterService
from kumo.sim.cluster import sim_host, vm_spec
from kumo.store import keys
from kumo.store.base import Compare, Put
from kumo.store.cache import StoreCache
from kumo.store.lease import Fence
from kumo.store.memory import MemoryStore
from kumo.store.records import load, put

LEASE_TTL = 5  # the agents' default
HOST_CPUS = 32
HOST_MEMORY_MIB = 128 * 1024
HA_PER_VICTIM = 50
OFF_PER_VICTIM = 5
# (weight, vcpus, memory MiB): 4.4 GiB and 2.4 vCPUs a VM on average, so 20 VMs fill about
# 70 % of a host's memory and 40 % of its vCPUs (4x overcommit)
FLAVORS = ((10, 1, 1024), (5, 2, 4096), (3, 4, 8192), (2, 8, 16384))
ANTI_GROUP_SIZE = 4  # members of an anti-affinity group, each on its own host


class FakeMonotonic:
    """The leader's and the store's lease clock: moved by hand, so the grace passes at once."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Cluster:
    store: MemoryStore
    cache: StoreCache
    service: ClusterService
    fence: Fence
    mono: FakeMonotonic
    leases: dict[str, int]  # live host -> its agent's lease
    victims: list[str]  # hosts holding the HA VMs to recover, in the order they die
    leader_lease: int
    dead: list[str] = field(default_factory=list)

    def keep_alive(self) -> None:
        """Every live agent and the leader renew their lease (as they do every second)."""
        self.store.extend_leases()  # every lease the store still holds: the live ones

    def advance(self, seconds: float) -> None:
        self.keep_alive()
        self.mono.t += seconds

    def close(self) -> None:
        self.cache.stop()
        self.store.close()


def host_names(n: int) -> list[str]:
    return [f"h{i:04d}" for i in range(n)]


def victim_names(hosts: list[str], n: int) -> list[str]:
    """``n`` hosts spread over the cluster."""
    step = max(1, len(hosts) // n)
    return [hosts[i * step] for i in range(n)]


@dataclass
class _Fill:
    """Capacity used per host while the specs are spread (the scheduler's rules)."""

    cpus: dict[str, int] = field(default_factory=dict)
    mem: dict[str, int] = field(default_factory=dict)
    groups: dict[str, set[str]] = field(default_factory=dict)  # anti-affinity group -> hosts

    def fits(self, host: str, vcpus: int, mem: int, anti: str | None) -> bool:
        if anti is not None and host in self.groups.get(anti, set()):
            return False
        return (
            self.cpus.get(host, 0) + vcpus <= HOST_CPUS * Policy().cpu_ratio
            and self.mem.get(host, 0) + mem <= HOST_MEMORY_MIB
        )

    def take(self, host: str, vcpus: int, mem: int, anti: str | None) -> None:
        self.cpus[host] = self.cpus.get(host, 0) + vcpus
        self.mem[host] = self.mem.get(host, 0) + mem
        if anti is not None:
            self.groups.setdefault(anti, set()).add(host)


def specs(
    hosts: list[str], victims: list[str], n_vms: int, ha_per_victim: int, seed: int = 1
) -> list[tuple[VMSpec, str]]:
    """``n_vms`` VMs and their hosts: ``ha_per_victim`` HA and OFF_PER_VICTIM other VMs on
    each victim, the rest spread over the other hosts (the next host with room, from a random
    start: about the same count on each, as the ``spread`` weigher gives)."""
    rng = random.Random(seed)
    fill = _Fill()
    out: list[tuple[VMSpec, str]] = []
    others = [h for h in hosts if h not in set(victims)]
    anti_groups = max(1, n_vms // 10 // ANTI_GROUP_SIZE)  # 10 % of VMs in a group
    i = 0

    def one(host: str | None, ha_on: bool, victim: bool) -> None:
        nonlocal i
        name = f"vm{i:05d}"
        i += 1
        _, vcpus, mem = rng.choices(FLAVORS, weights=[f[0] for f in FLAVORS])[0]
        roll = rng.random()
        anti = f"aa{rng.randrange(anti_groups)}" if roll < 0.1 else None
        allowed: tuple[str, ...] = ()
        preferred = None
        failback = False
        if 0.1 <= roll < 0.2:  # may run on 30 hosts only
            allowed = tuple(sorted(rng.sample(others, min(30, len(others)))))
        elif 0.2 <= roll < 0.25:
            preferred = rng.choice(others)
            failback = rng.random() < 0.5
        if host is None:  # spread: the next host with room
            host = _spread(rng, fill, list(allowed) or others, vcpus, mem, anti)
            if host is None and anti is not None:  # a small cluster: fewer hosts than members
                anti = None
                host = _spread(rng, fill, list(allowed) or others, vcpus, mem, anti)
            if host is None:
                raise RuntimeError(f"{name}: no room; fewer VMs or more hosts")
        elif anti is not None and not fill.fits(host, vcpus, mem, anti):
            anti = None  # a victim holds one member of a group at most
        if victim and allowed and host not in allowed:
            allowed = (*allowed, host)
        if victim and preferred is None and roll > 0.9:
            preferred = host  # back home once it is up again
            failback = True
        fill.take(host, vcpus, mem, anti)
        spec = vm_spec(
            name,
            vcpus=vcpus,
            memory_mib=mem,
            placement=PlacementRules(anti_affinity=anti),
            ha=HASpec(
                mode=HAMode.RESTART if ha_on else HAMode.OFF,
                priority=rng.choice((0, 0, 0, 0, 0, 100, 100, 500, 1000)),
                hosts=allowed,
                preferred=preferred,
                failback=failback,
            ),
            created_at=1.0,
        )
        out.append((spec, host))

    for v in victims:
        for _ in range(ha_per_victim):
            one(v, True, True)
        for _ in range(OFF_PER_VICTIM):
            one(v, False, True)
    pairs = 0
    while i < n_vms:
        if pairs < n_vms // 100 and n_vms - i >= 2:  # 1 % of VMs in pairs kept together
            host = others[rng.randrange(len(others))]
            one(host, True, False)
            one(host, True, False)
            aff = f"pair{pairs}"
            for k in (-2, -1):
                s, h = out[k]
                rules = PlacementRules(affinity=aff)
                out[k] = (s.model_copy(update={"placement": rules}), h)
            pairs += 1
        else:
            one(None, rng.random() < 0.8, False)
    return out


def _spread(
    rng: random.Random, fill: _Fill, hosts: list[str], vcpus: int, mem: int, anti: str | None
) -> str | None:
    start = rng.randrange(len(hosts))
    for k in range(len(hosts)):
        cand = hosts[(start + k) % len(hosts)]
        if fill.fits(cand, vcpus, mem, anti):
            return cand
    return None


def build(
    n_hosts: int = 1000,
    n_vms: int = 20000,
    n_victims: int = 14,
    ha_per_victim: int = HA_PER_VICTIM,
    seed: int = 1,
) -> Cluster:
    """The cluster in a MemoryStore, read through a started StoreCache, as the leader sees
    it; ``n_victims`` hosts hold ``ha_per_victim`` HA VMs each."""
    mono = FakeMonotonic()
    store = MemoryStore(clock=mono)
    hosts = host_names(n_hosts)
    victims = victim_names(hosts, n_victims)
    ops: list[Put] = []
    leases: dict[str, int] = {}
    for h in hosts:
        rec: HostRecord = sim_host(h, cpus=HOST_CPUS, memory_mib=HOST_MEMORY_MIB)
        leases[h] = store.grant(LEASE_TTL)
        store.commit([], [put(keys.HOSTS + h, rec), put(keys.ALIVE + h, rec, leases[h])])
    now = time.time()
    for spec, host in specs(hosts, victims, n_vms, ha_per_victim, seed):
        ops += [
            put(keys.VMS + spec.name, spec),
            put(keys.PLACEMENT + spec.name, Placement(host=host, at=now)),
            put(
                keys.VMSTATUS + spec.name,
                VMStatus(name=spec.name, host=host, state=VMState.RUNNING, updated_at=now),
            ),
        ]
        if len(ops) >= 3000:
            store.commit([], ops)
            ops = []
    if ops:
        store.commit([], ops)
    leader_lease = store.grant(LEASE_TTL)
    rev = store.commit([], [Put(keys.LEADER, b"bench", leader_lease)])
    assert rev is not None
    fence = Fence("leader bench", (Compare(keys.LEADER, rev),))
    cache = StoreCache(store)
    cache.start()
    cache.sync(timeout=60)
    service = ClusterService(store, view=cache)
    return Cluster(store, cache, service, fence, mono, leases, victims, leader_lease)


def kill(c: Cluster, host: str) -> None:
    """The host's agent is gone: its lease revoked, its alive key deleted."""
    c.store.revoke(c.leases.pop(host))
    c.dead.append(host)
    c.cache.sync()


def fence_host(c: Cluster, host: str) -> None:
    """The record the leader writes once the grace has passed (``HAManager._fence``)."""
    st = c.service.state
    now = st.clock.now()
    grace = HASettings().grace_s
    rec = FencedHost(
        host=host,
        at=now,
        reason=f"no agent lease for {grace:g} s (lease expired, then the grace)",
        lease_expired_at=now - grace,
        by=ACTOR,
    )
    ok = st.commit(
        [*c.fence.compares, Compare(keys.ALIVE + host, 0), Compare(keys.FENCED + host, 0)],
        [put(keys.FENCED + host, rec), st.event(ACTOR, f"host/{host}", "fenced", rec.reason)],
    )
    if ok is None:
        raise RuntimeError(f"could not fence {host}: its agent holds a lease, or it is fenced")


def ha_vms_on(c: Cluster, host: str) -> list[str]:
    """The VMs placed on ``host`` that HA would run elsewhere."""
    view = c.service.view
    specs = view.models(VMSpec, keys.VMS)
    return sorted(
        v
        for v, (p, _) in view.models(Placement, keys.PLACEMENT).items()
        if p.host == host and wants_recovery(specs[v][0])
    )


def check_recovered(c: Cluster, vms: list[str]) -> int:
    """How many of ``vms`` are placed on a live host, read from the store itself; raises if
    one is still placed on a dead host without a recovering record saying why."""
    placed = 0
    for v in vms:
        found = load(c.store, Placement, keys.PLACEMENT + v)
        assert found is not None
        host = found[0].host
        if host in c.leases:
            placed += 1
        elif c.store.get(keys.HA + v) is None:
            raise AssertionError(f"{v} is still on dead host {host} and not recovering")
    return placed


@dataclass(frozen=True)
class Sample:
    seconds: float
    vms: int  # HA VMs of the dead host
    recovered: int  # placed on live hosts by this call


def time_recover(c: Cluster, host: str, profile: cProfile.Profile | None = None) -> Sample:
    """Kill and fence ``host``; time ``HAManager.recover``."""
    kill(c, host)
    vms = ha_vms_on(c, host)
    fence_host(c, host)
    if profile:
        profile.enable()
    t = time.perf_counter()
    done: list[Recovered] = c.service.ha.recover(c.fence)
    dt = time.perf_counter() - t
    if profile:
        profile.disable()
    assert len(done) == check_recovered(c, vms), (len(done), host)
    return Sample(dt, len(vms), len(done))


def time_run(c: Cluster, host: str) -> Sample:
    """Kill ``host``; one pass sees it gone, the grace passes, and the pass that fences it
    and recovers its VMs is timed."""
    ha = c.service.ha
    kill(c, host)
    vms = ha_vms_on(c, host)
    ha.run(c.mono(), c.fence)
    c.advance(HASettings().grace_s)
    t = time.perf_counter()
    ha.run(c.mono(), c.fence)
    dt = time.perf_counter() - t
    assert c.store.get(keys.FENCED + host) is not None, host
    return Sample(dt, len(vms), check_recovered(c, vms))


def time_passes(c: Cluster, n: int) -> list[float]:
    """``n`` leader passes with nothing (new) to do."""
    out = []
    for _ in range(n):
        c.advance(0.5)
        t = time.perf_counter()
        c.service.ha.run(c.mono(), c.fence)
        out.append(time.perf_counter() - t)
    return out


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def stats_ms(xs: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(xs) * 1000, 1),
        "p95_ms": round(percentile(xs, 95) * 1000, 1),
        "max_ms": round(max(xs) * 1000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--vms", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=7, help="dead hosts per measurement (>= 5)")
    ap.add_argument("--passes", type=int, default=20, help="idle leader passes timed")
    ap.add_argument("--profile", action="store_true", help="cProfile the recoveries")
    args = ap.parse_args()
    logging.getLogger("kumo").setLevel(logging.ERROR)  # not a line per recovery
    t0 = time.perf_counter()
    c = build(args.hosts, args.vms, 2 * args.runs)
    build_s = time.perf_counter() - t0
    try:
        c.service.ha.run(c.mono(), c.fence)  # warm up: the cache decodes every record once
        idle = time_passes(c, args.passes)
        prof = cProfile.Profile() if args.profile else None
        recover = [time_recover(c, h, prof) for h in c.victims[: args.runs]]
        run = [time_run(c, h) for h in c.victims[args.runs :]]
        idle_fenced = time_passes(c, args.passes)
    finally:
        c.close()
    result = {
        "hosts": args.hosts,
        "vms": args.vms,
        "ha_vms_per_dead_host": HA_PER_VICTIM,
        "runs": args.runs,
        "build_s": round(build_s, 1),
        "view": "StoreCache over MemoryStore (as kumo server: ClusterService(store, view=cache))",
        "python": platform.python_version(),
        "recover": {
            **stats_ms([s.seconds for s in recover]),
            # the first after the leader started: Placer.placed() builds every VM's demand
            "first_ms": round(recover[0].seconds * 1000, 1),
            "samples": _samples(recover),
        },
        "run_with_fence": {**stats_ms([s.seconds for s in run]), "samples": _samples(run)},
        "idle_pass": stats_ms(idle),
        "idle_pass_with_fenced_hosts": {**stats_ms(idle_fenced), "fenced_hosts": len(c.dead)},
    }
    print_table(result)
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ha_scale.json").write_text(json.dumps(result, indent=2) + "\n")


def _samples(xs: list[Sample]) -> list[dict[str, float | int]]:
    return [{"ms": round(s.seconds * 1000, 1), "vms": s.vms, "recovered": s.recovered} for s in xs]


def print_table(r: dict[str, object]) -> None:
    print(f"{r['hosts']} hosts, {r['vms']} VMs, {HA_PER_VICTIM} HA VMs on each dead host")
    print(f"{'leader step':<44}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}  VMs placed")
    for key, label in (
        ("recover", "recover(): decide + commit 50 VMs"),
        ("run_with_fence", "run(): fence + decide + commit 50 VMs"),
        ("idle_pass", "run(): a pass, nothing dead"),
        ("idle_pass_with_fenced_hosts", "run(): a pass, dead hosts fenced, all placed"),
    ):
        s = r[key]
        assert isinstance(s, dict)
        placed = ""
        if "samples" in s:
            placed = " ".join(f"{x['recovered']}/{x['vms']}" for x in s["samples"])
        print(f"{label:<44}{s['p50_ms']:>9}{s['p95_ms']:>9}{s['max_ms']:>9}  {placed}")
    first = r["recover"]
    assert isinstance(first, dict)
    print(
        f"the first recover() after the leader started (demands not memoised yet): "
        f"{first['first_ms']} ms"
    )


if __name__ == "__main__":
    main()
