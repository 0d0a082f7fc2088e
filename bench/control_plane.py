"""Benchmark: control-plane scale with simulated hosts (no QEMU): a real etcd on loopback,
a real `kumo server`, 100 hosts registered as their agents would, then
  1. place 1,000 VMs through the API (POST /api/v1/vms): placements per second;
  2. grow to 10,000 VMs (records written straight to etcd) and read pages of 500 through
     the API: p50/p99 latency, and the time to list all 10,000.
Prints a table and writes bench/results/control_plane.json.

    .venv/bin/python -m bench.control_plane [--hosts 100 --vms 1000 --total 10000 --clients 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from tests.conftest import free_port

from kumo.model.vm import Placement
from kumo.sim.cluster import register_hosts, sim_host, vm_spec
from kumo.store import keys
from kumo.store.etcd import EtcdStore
from kumo.store.records import put


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
    for _ in range(100):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("etcd did not start")


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--total", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3, help="whole runs, each on a fresh etcd")
    args = ap.parse_args()
    runs = [one_run(args) for _ in range(args.repeat)]
    head = "".join(f"{'run ' + str(i + 1):>10}" for i in range(len(runs)))
    print(f"{'metric':<22}{head}{'median':>10}")
    for k in runs[0]:
        vals = [r[k] for r in runs]
        nums = [float(v) for v in vals if isinstance(v, int | float)]
        med = f"{statistics.median(nums):g}" if len(nums) == len(vals) else "-"
        print(f"{k:<22}" + "".join(f"{v!s:>10}" for v in vals) + f"{med:>10}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "control_plane.json").write_text(json.dumps(runs, indent=2) + "\n")


def one_run(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="kumo-bench-"))
    etcd, etcd_url = start_etcd(tmp)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kumo",
            "server",
            "--etcd",
            etcd_url,
            "--port",
            str(port),
            "--token-file",
            str(tmp / "token"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return run(args, etcd_url, f"http://127.0.0.1:{port}", tmp)
    finally:
        server.kill()
        etcd.kill()
        server.wait()
        etcd.wait()


def run(args: argparse.Namespace, etcd_url: str, url: str, tmp: Path) -> dict[str, object]:
    for _ in range(100):
        if (tmp / "token").exists():
            break
        time.sleep(0.1)
    token = (tmp / "token").read_text().strip()
    api = httpx.Client(
        base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    for _ in range(100):
        try:
            api.get("/pools")
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    store = EtcdStore(etcd_url)
    api.post("/pools", json={"name": "shared", "path": "/pool"}).raise_for_status()
    api.post("/networks", json={"name": "public", "bridge": "br0"}).raise_for_status()
    api.post(
        "/images", json={"name": "img", "pool": "shared", "path": "img.qcow2"}
    ).raise_for_status()
    lease = register_hosts(
        store, [sim_host(f"sim{i:03d}", cpus=64, memory_mib=512 * 1024) for i in range(args.hosts)]
    )
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(1):
            store.keepalive(lease)

    threading.Thread(target=keep, daemon=True).start()

    # 1. placements through the API
    def create(i: int) -> float:
        t = time.perf_counter()
        r = api.post(
            "/vms", json={"name": f"vm{i:05d}", "image": "img", "memory_mib": 512, "start": False}
        )
        r.raise_for_status()
        return time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        lat = list(pool.map(create, range(args.vms)))
    place_s = time.perf_counter() - t0
    hosts = api.get("/hosts").json()
    per_host = [h["vms"] for h in hosts]

    # 2. grow to --total VMs straight in etcd, then page through the API
    t1 = time.perf_counter()
    batch = []
    for i in range(args.vms, args.total):
        spec = vm_spec(f"vm{i:05d}", memory_mib=512, created_at=time.time())
        batch += [
            put(keys.VMS + spec.name, spec),
            put(
                keys.PLACEMENT + spec.name,
                Placement(host=f"sim{i % args.hosts:03d}", at=time.time()),
            ),
        ]
        if len(batch) >= 100:
            store.commit([], batch)
            batch = []
    if batch:
        store.commit([], batch)
    fill_s = time.perf_counter() - t1
    page_lat = []
    names = [f"vm{i:05d}" for i in range(0, args.total, 500)]
    for k in range(args.pages):
        after = names[k % len(names)] if k % len(names) else ""
        t = time.perf_counter()
        page = api.get("/vms", params={"limit": 500, "after": after})
        page.raise_for_status()
        page_lat.append(time.perf_counter() - t)
        assert len(page.json()) == 500 or after
    t2 = time.perf_counter()
    listed, after = 0, ""
    while True:
        page = api.get("/vms", params={"limit": 500, "after": after}).json()
        listed += len(page)
        if len(page) < 500:
            break
        after = page[-1]["name"]
    list_all_s = time.perf_counter() - t2
    stop.set()

    result: dict[str, object] = {
        "hosts": args.hosts,
        "placed": args.vms,
        "clients": args.clients,
        "placements_per_s": round(args.vms / place_s, 1),
        "create_p50_ms": round(statistics.median(lat) * 1000, 1),
        "create_p99_ms": round(percentile(lat, 99) * 1000, 1),
        "vms_per_host_min": min(per_host),
        "vms_per_host_max": max(per_host),
        "total_vms": listed,
        "fill_s": round(fill_s, 1),
        "page500_p50_ms": round(statistics.median(page_lat) * 1000, 1),
        "page500_p99_ms": round(percentile(page_lat, 99) * 1000, 1),
        "list_all_s": round(list_all_s, 2),
    }
    return result


if __name__ == "__main__":
    main()
