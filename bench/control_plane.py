"""Benchmark: control-plane scale with simulated hosts (no QEMU): a real etcd on loopback,
`kumo server` replicas (--replicas, default 2: the leader, which also runs the controllers,
and a standby), and simulated agents that write what real agents write (bench/sim_agents.py:
liveness leases, a first pass with events, status and task end for each VM placed, and
status changes at a steady rate). Then:

  1. place --vms VMs through the API (POST /api/v1/vms), the clients spread over the
     replicas. Hosts come in three classes (general, big, old) that differ in size, guest
     CPU models and pools, and the VMs in four flavours that need them, sized so that the
     filters bind: some creates are refused (409, no valid host). Placements per second
     count successes only; refusals per second and their reasons are reported beside them;
  2. grow to --total VMs (records written straight to etcd, each with its status, as if
     placed long ago) and read pages of 500 through the API, the replicas in turn: p50/p99
     latency, and the time to list them all.

Prints a table (one column a run, and the median) and writes bench/results/control_plane.json.

    .venv/bin/python -m bench.control_plane [--hosts 100 --vms 1000 --total 10000 --clients 8]
    .venv/bin/python -m bench.control_plane --hosts 20 --vms 200 --total 1000 --repeat 1  # smoke

A full run (3 repeats at the defaults) takes about a minute and a half on 2 cores (25 s a
repeat), the smoke run about 15 s. Host sizes scale with --vms / --hosts, so refusals happen
at any size.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.conftest import free_port

from bench.sim_agents import SimAgents
from kumo.model.host import HostRecord
from kumo.model.vm import Placement, VMState, VMStatus
from kumo.sim.cluster import sim_host, vm_spec
from kumo.store import keys
from kumo.store.base import Put
from kumo.store.etcd import EtcdStore
from kumo.store.records import put

MAX_TXN_PUTS = 120  # etcd's default limit is 128 operations a transaction
RETRIES = 5  # a client retries "too many concurrent placements; try again"


@dataclass(frozen=True)
class HostClass:
    name: str
    cpus: int  # at 10 VMs a host
    memory_gib: int  # at 10 VMs a host
    cpu_models: tuple[str, ...]
    pools: tuple[str, ...]


# Host i is of class CLASS_CYCLE[i % 4]. Sizes are for 10 VMs a host and scale with
# --vms / --hosts. Memory offered: 4.45 GiB a VM; asked: 5.8 GiB a VM on average, of which
# 2.8 GiB with the Skylake-Server model that only big hosts (2.3 GiB a VM) provide, and
# spreading puts small VMs there too. Some creates are refused for memory, some for vCPUs
# (4x overcommit); every class ends nearly full.
GENERAL = HostClass("general", 3, 34, ("qemu64", "Haswell-noTSX"), ("shared",))
BIG = HostClass("big", 10, 92, ("qemu64", "Haswell-noTSX", "Skylake-Server"), ("shared", "fast"))
OLD = HostClass("old", 2, 18, ("qemu64",), ("shared",))
CLASS_CYCLE = (GENERAL, GENERAL, BIG, OLD)


@dataclass(frozen=True)
class Flavor:
    weight: int
    vcpus: int
    memory_mib: int
    cpu_model: str
    image: str  # its pool: img in shared, img-fast in fast (big hosts only)


FLAVORS = (
    Flavor(10, 1, 2048, "qemu64", "img"),
    Flavor(5, 2, 8192, "Haswell-noTSX", "img"),
    Flavor(3, 4, 8192, "Skylake-Server", "img-fast"),
    Flavor(2, 8, 16384, "Skylake-Server", "img"),
)


def sim_hosts(n: int, vms: int) -> list[HostRecord]:
    scale = vms / n / 10
    out = []
    for i in range(n):
        c = CLASS_CYCLE[i % len(CLASS_CYCLE)]
        rec = sim_host(
            f"{c.name}{i:03d}",
            cpus=max(1, round(c.cpus * scale)),
            memory_mib=max(1024, round(c.memory_gib * 1024 * scale)),
        )
        out.append(rec.model_copy(update={"cpu_models": c.cpu_models, "pools": c.pools}))
    return out


def flavors(n: int, seed: int = 1) -> list[Flavor]:
    rng = random.Random(seed)
    return rng.choices(FLAVORS, weights=[f.weight for f in FLAVORS], k=n)


def start_etcd(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(
        [
            "etcd",
            "--name",
            "b",
            "--data-dir",
            str(tmp / "etcd"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"b=http://127.0.0.1:{peer}",
            "--quota-backend-bytes",
            str(4 << 30),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(url + "/health", "etcd")
    return proc, url


def start_server(tmp: Path, etcd_url: str, ident: str) -> tuple[subprocess.Popen[bytes], str]:
    """A `kumo server` replica; the first one started writes the admin token to tmp/token."""
    port = free_port()
    log = (tmp / f"server-{ident}.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kumo",
            "server",
            "--etcd",
            etcd_url,
            "--port",
            str(port),
            "--ident",
            ident,
            "--token-file",
            str(tmp / "token"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", f"kumo server {ident} (log: {log.name})")
    return proc, url


def wait_http(url: str, what: str) -> None:
    for _ in range(200):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within 20 s")


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def ms(xs: list[float], p: float) -> float | None:
    return round(percentile(xs, p) * 1000, 1) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--total", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--replicas", type=int, default=2, help="kumo server replicas (1 leads)")
    ap.add_argument("--churn", type=float, default=10.0, help="agent status changes a second")
    ap.add_argument("--agent-workers", type=int, default=4, help="threads doing first passes")
    ap.add_argument("--repeat", type=int, default=3, help="whole runs, each on a fresh etcd")
    args = ap.parse_args()
    if not 1 <= args.replicas <= 8:
        ap.error("--replicas: 1 to 8")
    runs = [one_run(args) for _ in range(args.repeat)]
    head = "".join(f"{'run ' + str(i + 1):>10}" for i in range(len(runs)))
    print(f"{'metric':<26}{head}{'median':>10}")
    for k in runs[0]:
        vals = [r[k] for r in runs]
        nums = [float(v) for v in vals if isinstance(v, int | float)]
        med = f"{statistics.median(nums):g}" if len(nums) == len(vals) else "-"
        print(f"{k:<26}" + "".join(f"{v!s:>10}" for v in vals) + f"{med:>10}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "control_plane.json").write_text(json.dumps(runs, indent=2) + "\n")


def one_run(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="kumo-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        etcd, etcd_url = start_etcd(tmp)
        procs.append(etcd)
        urls = []
        for ident in "abcdefgh"[: args.replicas]:  # the first bootstraps and leads
            server, url = start_server(tmp, etcd_url, ident)
            procs.append(server)
            urls.append(url)
        return run(args, etcd_url, urls, tmp)
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()


@dataclass(frozen=True)
class Outcome:
    seconds: float
    refusal: str | None  # None: placed
    retries: int


def refusal_reason(detail: str) -> str:
    for part, reason in (
        ("free memory", "memory"),
        ("free vCPUs", "cpu"),
        ("CPU model", "cpu_model"),
        ("reaches pool", "pool"),
    ):
        if part in detail:
            return reason
    return "other"


def run(args: argparse.Namespace, etcd_url: str, urls: list[str], tmp: Path) -> dict[str, object]:
    token = (tmp / "token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    apis = [httpx.Client(base_url=u + "/api/v1", headers=auth, timeout=30) for u in urls]
    api = apis[0]
    store = EtcdStore(etcd_url)
    for pool in ("shared", "fast"):
        api.post("/pools", json={"name": pool, "path": f"/{pool}"}).raise_for_status()
    api.post("/networks", json={"name": "public", "bridge": "br0"}).raise_for_status()
    for image, pool in (("img", "shared"), ("img-fast", "fast")):
        body = {"name": image, "pool": pool, "path": f"{image}.qcow2"}
        api.post("/images", json=body).raise_for_status()
    hosts = sim_hosts(args.hosts, args.vms)
    agents = SimAgents(etcd_url, hosts, workers=args.agent_workers, churn_per_s=args.churn)
    agents.start()
    try:
        result: dict[str, object] = {"hosts": args.hosts, "replicas": len(urls)}
        result["leader"] = leader(urls)
        result |= place(args, apis, agents)
        result |= host_fill(api.get("/hosts").json())
        result |= grow_and_page(args, apis, store, hosts, agents)
        result |= {
            "lease_expired": agents.counts.lease_expired,
            "agent_errors": len(agents.counts.errors),
        }
        for e in agents.counts.errors[:5]:
            print("agent error:", e, file=sys.stderr)
        return result
    finally:
        agents.stop()


def leader(urls: list[str]) -> str:
    """The replica every replica names as leader (the election may take a moment)."""
    for _ in range(100):
        named = {httpx.get(u + "/healthz").json()["leader"] for u in urls}
        if len(named) == 1 and None not in named:
            return str(named.pop())
        time.sleep(0.1)
    raise RuntimeError(f"the replicas do not agree on a leader: {named}")


def place(
    args: argparse.Namespace, apis: list[httpx.Client], agents: SimAgents
) -> dict[str, object]:
    """Phase 1: --vms creates spread over the replicas while the agents write."""
    kinds = flavors(args.vms)

    def create(i: int) -> Outcome:
        f = kinds[i]
        body = {
            "name": f"vm{i:05d}",
            "image": f.image,
            "vcpus": f.vcpus,
            "memory_mib": f.memory_mib,
            "cpu_model": f.cpu_model,
            "start": True,
        }
        for retries in range(RETRIES + 1):
            t = time.perf_counter()
            r = apis[i % len(apis)].post("/vms", json=body)
            dt = time.perf_counter() - t
            if r.status_code == 201:
                return Outcome(dt, None, retries)
            detail = str(r.json().get("detail", "")) if r.status_code < 500 else r.text
            if r.status_code == 409 and "try again" in detail and retries < RETRIES:
                continue
            if r.status_code == 409 and "no valid host" in detail:
                return Outcome(dt, refusal_reason(detail), retries)
            raise RuntimeError(f"create vm{i:05d}: {r.status_code} {detail}")
        raise AssertionError("unreachable")

    before = (agents.counts.status_writes, agents.counts.commits)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        outcomes = list(pool.map(create, range(args.vms)))
    place_s = time.perf_counter() - t0
    writes = agents.counts.status_writes - before[0]
    commits = agents.counts.commits - before[1]
    backlog = agents.backlog()
    catchup = agents.wait_idle()
    placed = [o.seconds for o in outcomes if o.refusal is None]
    refused = [o for o in outcomes if o.refusal is not None]
    reasons = Counter(o.refusal for o in refused)
    return {
        "clients": args.clients,
        "asked": args.vms,
        "placed": len(placed),
        "refused": len(refused),
        **{f"refused_{r}": reasons.get(r, 0) for r in ("memory", "cpu", "cpu_model", "other")},
        "retries": sum(o.retries for o in outcomes),
        "placements_per_s": round(len(placed) / place_s, 1),
        "refusals_per_s": round(len(refused) / place_s, 1),
        "create_p50_ms": ms(placed, 50),
        "create_p99_ms": ms(placed, 99),
        "refusal_p50_ms": ms([o.seconds for o in refused], 50),
        "agent_status_per_s": round(writes / place_s, 1),
        "agent_commits_per_s": round(commits / place_s, 1),
        "agent_backlog_at_end": backlog,
        "agent_catchup_s": round(catchup, 2),
    }


def host_fill(hosts: list[dict[str, object]]) -> dict[str, object]:
    """How full each class of host ended: the filters bound where it is near 100 %."""
    out: dict[str, object] = {
        "vms_per_host_min": min(int(str(h["vms"])) for h in hosts),
        "vms_per_host_max": max(int(str(h["vms"])) for h in hosts),
    }
    for c in dict.fromkeys(CLASS_CYCLE):
        mine = [h for h in hosts if str(h["name"]).startswith(c.name)]
        used = sum(int(str(h["memory_used_mib"])) for h in mine)
        cap = sum(int(str(h["memory_mib"])) for h in mine)
        out[f"mem_used_pct_{c.name}"] = round(100 * used / cap, 1) if cap else None
    return out


def grow_and_page(
    args: argparse.Namespace,
    apis: list[httpx.Client],
    store: EtcdStore,
    hosts: list[HostRecord],
    agents: SimAgents,
) -> dict[str, object]:
    """Phase 2: VMs up to --total straight in etcd with their status, then pages of 500
    through the replicas in turn while the agents' status changes go on."""
    agents.stop_accepting()
    t1 = time.perf_counter()
    batch: list[Put] = []
    states: dict[str, tuple[str, VMState]] = {}
    for i in range(args.vms, args.total):
        now = time.time()
        spec = vm_spec(f"vm{i:05d}", memory_mib=512, created_at=now)
        host = hosts[i % len(hosts)].name
        status = VMStatus(name=spec.name, host=host, state=VMState.RUNNING, updated_at=now)
        batch += [
            put(keys.VMS + spec.name, spec),
            put(keys.PLACEMENT + spec.name, Placement(host=host, at=now)),
            put(keys.VMSTATUS + spec.name, status),
        ]
        states[spec.name] = (host, VMState.RUNNING)
        if len(batch) + 3 > MAX_TXN_PUTS:
            store.commit([], batch)
            batch = []
    if batch:
        store.commit([], batch)
    agents.adopt(states)
    fill_s = time.perf_counter() - t1
    page_lat = []
    names = [f"vm{i:05d}" for i in range(0, args.total, 500)]
    for k in range(args.pages):
        after = names[k % len(names)] if k % len(names) else ""
        t = time.perf_counter()
        page = apis[k % len(apis)].get("/vms", params={"limit": 500, "after": after})
        page.raise_for_status()
        page_lat.append(time.perf_counter() - t)
        assert len(page.json()) == 500 or after
    t2 = time.perf_counter()
    listed, with_status, after = 0, 0, ""
    while True:
        got = apis[0].get("/vms", params={"limit": 500, "after": after}).json()
        listed += len(got)
        with_status += sum(1 for v in got if v["status"] is not None)
        if len(got) < 500:
            break
        after = got[-1]["name"]
    return {
        "total_vms": listed,
        "with_status": with_status,  # the agents' records are there
        "fill_s": round(fill_s, 1),
        "page500_p50_ms": ms(page_lat, 50),
        "page500_p99_ms": ms(page_lat, 99),
        "list_all_s": round(time.perf_counter() - t2, 2),
    }


if __name__ == "__main__":
    main()
