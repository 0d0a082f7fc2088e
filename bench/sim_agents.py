"""Simulated host agents for the control-plane benchmark: they write to etcd what real
agents write (agent/agent.py), with no libvirt behind them.

- Each host's liveness key on its own lease, renewed every second (``Agent.keepalive``;
  an expired lease registers the host again, and is counted).
- For each VM placed on a host, the first pass of a new running VM, as soon as the
  placement is seen: an event for each of create-disk, define and start (``Agent._act``),
  then the status ``running`` with its state event (``Agent._status``), then the create
  task finished (``finish_task``). Each is its own etcd transaction, as in the agent.
- Status changes at a steady rate (``churn_per_s``): a running VM stops or a stopped one
  starts, each a status record with its state event, as when guests shut down or are
  started.

Not simulated: a real agent watches all of /kumo/ and, on each change and every 5 s,
re-reads every VM, placement, migration and status. A hundred such readers in this one
process would cost it more CPU than the servers it measures; their load on etcd is
therefore missing from the benchmark.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import dataclass, field

from kumo.agent.decide import Action
from kumo.model.activity import TaskState
from kumo.model.host import HostRecord
from kumo.model.vm import Placement, VMSpec, VMState, VMStatus
from kumo.sim.cluster import register_hosts
from kumo.store import keys
from kumo.store.activity import event_op, finish_task
from kumo.store.base import LeaseExpired, StoreUnavailable
from kumo.store.etcd import EtcdStore
from kumo.store.records import load, put

LEASE_TTL = 5  # AgentConfig.lease_ttl
FIRST_PASS = (Action.CREATE_DISK, Action.DEFINE, Action.START)


@dataclass
class Counts:
    first_passes: int = 0
    status_writes: int = 0
    commits: int = 0  # every etcd transaction the agents made
    lease_expired: int = 0
    errors: list[str] = field(default_factory=list)


class SimAgents:
    """The agents of ``hosts``, in threads of this process; :meth:`start`, then
    :meth:`stop`. :meth:`wait_idle` waits until every placement seen has had its first pass."""

    def __init__(
        self, etcd: str, hosts: list[HostRecord], workers: int = 4, churn_per_s: float = 10.0
    ) -> None:
        self.etcd = etcd
        self.hosts = hosts
        self.workers = workers
        self.churn_per_s = churn_per_s
        self.counts = Counts()
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._leases: dict[str, int] = {}
        self._states: dict[str, tuple[str, VMState]] = {}  # vm -> (host, state)
        self._names: list[str] = []  # of _states, for random picks
        self._stop = threading.Event()
        self._accept = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch_stores: list[EtcdStore] = []

    # -- life ------------------------------------------------------------------------
    def start(self) -> None:
        store = EtcdStore(self.etcd)
        for rec in self.hosts:
            self._leases[rec.name] = register_hosts(store, [rec], ttl=LEASE_TTL)
        self._accept.set()
        start_rev = store.revision() + 1
        targets = [self._keepalive, self._churn, lambda: self._watch(start_rev)]
        targets += [self._work] * self.workers
        for target in targets:
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for store in self._watch_stores:
            store.close()
        for t in self._threads:
            t.join(timeout=5)

    def stop_accepting(self) -> None:
        """Placements seen from now on are not new VMs to the agents (the benchmark's bulk
        fill writes VMs with their status, as if placed long ago)."""
        self._accept.clear()

    def adopt(self, states: dict[str, tuple[str, VMState]]) -> None:
        """VMs whose status is already written: their state may change from now on."""
        with self._lock:
            for name, hs in states.items():
                if name not in self._states:
                    self._names.append(name)
                self._states[name] = hs

    def wait_idle(self, timeout: float = 120.0) -> float:
        """Seconds until every placement seen has had its first pass."""
        t0 = time.perf_counter()
        deadline = t0 + timeout
        while self._queue.unfinished_tasks and time.perf_counter() < deadline:
            time.sleep(0.05)
        return time.perf_counter() - t0

    def backlog(self) -> int:
        return self._queue.qsize()

    # -- threads ---------------------------------------------------------------------
    def _keepalive(self) -> None:
        store = EtcdStore(self.etcd)
        by_name = {h.name: h for h in self.hosts}
        while not self._stop.wait(1.0):
            for name, lease in list(self._leases.items()):
                try:
                    store.keepalive(lease)
                except LeaseExpired:
                    self._leases[name] = register_hosts(store, [by_name[name]], ttl=LEASE_TTL)
                    with self._lock:
                        self.counts.lease_expired += 1
                except StoreUnavailable as exc:
                    self._error(f"keep-alive of {name}: {exc}")

    def _watch(self, start_rev: int) -> None:
        store = EtcdStore(self.etcd)
        self._watch_stores.append(store)
        try:
            for ev in store.watch(keys.PLACEMENT, start_rev):
                if self._stop.is_set():
                    return
                name = ev.key[len(keys.PLACEMENT) :]
                if ev.kind != "put" or not self._accept.is_set():
                    continue
                with self._lock:
                    new = name not in self._states
                if new:
                    host = Placement.model_validate_json(ev.value).host
                    self._queue.put((name, host))
        except StoreUnavailable as exc:
            if not self._stop.is_set():
                self._error(f"watch: {exc}")

    def _work(self) -> None:
        store = EtcdStore(self.etcd)
        while not self._stop.is_set():
            try:
                name, host = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._first_pass(store, name, host)
            except Exception as exc:  # counted and shown; the worker goes on
                self._error(f"first pass of {name}: {exc}")
            finally:
                self._queue.task_done()

    def _first_pass(self, store: EtcdStore, name: str, host: str) -> None:
        found = load(store, VMSpec, keys.VMS + name)
        if found is None:
            return
        spec = found[0]
        actor = f"agent:{host}"
        for action in FIRST_PASS:
            store.commit([], [event_op(actor, f"vm/{name}", str(action), f"{action} on {host}")])
        self._write_status(store, name, host, VMState.RUNNING, "unknown")
        commits = len(FIRST_PASS) + 1
        if spec.task and finish_task(store, spec.task, TaskState.SUCCEEDED, f"{name}: running"):
            commits += 1
        with self._lock:
            self.counts.first_passes += 1
            self.counts.commits += commits
            self._states[name] = (host, VMState.RUNNING)
            self._names.append(name)

    def _churn(self) -> None:
        store = EtcdStore(self.etcd)
        rng = random.Random(7)
        period = 1.0 / self.churn_per_s if self.churn_per_s > 0 else 0.0
        while period and not self._stop.wait(period):
            with self._lock:
                if not self._names:
                    continue
                name = rng.choice(self._names)
                host, state = self._states[name]
            new = VMState.STOPPED if state == VMState.RUNNING else VMState.RUNNING
            try:
                self._write_status(store, name, host, new, state)
            except StoreUnavailable as exc:
                self._error(f"status of {name}: {exc}")
                continue
            with self._lock:
                self._states[name] = (host, new)
                self.counts.commits += 1

    # -- helpers ---------------------------------------------------------------------
    def _write_status(
        self, store: EtcdStore, name: str, host: str, state: VMState, before: str
    ) -> None:
        status = VMStatus(name=name, host=host, state=state, updated_at=time.time())
        store.commit(
            [],
            [
                put(keys.VMSTATUS + name, status),
                event_op(f"agent:{host}", f"vm/{name}", "state", f"{before} -> {state}"),
            ],
        )
        with self._lock:
            self.counts.status_writes += 1

    def _error(self, message: str) -> None:
        with self._lock:
            if len(self.counts.errors) < 20:
                self.counts.errors.append(message)
