"""``ClusterService``: the server's operations in one object, as the API, the controllers,
the simulator and the benchmarks use them. A thin facade: it assembles the parts over one
``ClusterState`` and forwards to them; the work is done in

- ``state``: store, view, clock, ids, policy, ``commit`` and shared lookups;
- ``queries``: what the API shows (hosts, VMs, tasks, events, …);
- ``commands``: VM, pool, network and image commands;
- ``placement``: the scheduler's decisions committed in group commits;
- ``migrations``: migrate, the queue, cancel, the migration policy;
- ``maintenance``: host maintenance and the drain pass.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

from kumo.clock import SYSTEM_CLOCK, SYSTEM_IDS, Clock, Ids
from kumo.model.activity import Event, Task
from kumo.model.host import Image, Network, Pool
from kumo.model.profile import InstallProfile
from kumo.scheduler.placement import Policy
from kumo.server.commands import Commands
from kumo.server.ha import HAManager
from kumo.server.maintenance import Maintainer
from kumo.server.migrations import Migrations
from kumo.server.netpaths import NetPaths
from kumo.server.placement import Placer
from kumo.server.queries import Queries
from kumo.server.schemas import (
    HostView,
    ImageImport,
    NetworkCreate,
    PoolCreate,
    ProfileCreate,
    VMCreate,
    VMView,
)
from kumo.server.state import ClusterState
from kumo.store.base import ClusterStore
from kumo.store.cache import DirectView, StoreCache
from kumo.store.lease import NO_FENCE, Fence


class MigrationCommands(Migrations):
    """``service.migrations``: the migration commands, and host maintenance (which works
    through them) under the same roof, as the API and the controllers call them."""

    def __init__(self, state: ClusterState, placer: Placer) -> None:
        super().__init__(state, placer)
        self.hosts = Maintainer(state, self)

    def maintenance(self, host: str, action: str, failback: bool, actor: str) -> list[Task]:
        return self.hosts.maintenance(host, action, failback, actor)

    def drain(self, actor: str, fence: Fence = NO_FENCE) -> None:
        self.hosts.drain(actor, fence)


class ClusterService:
    def __init__(
        self,
        store: ClusterStore,
        policy: Policy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        view: StoreCache | DirectView | None = None,
        mac_bits: Callable[[], int] = lambda: secrets.randbits(24),
        ids: Ids = SYSTEM_IDS,
        new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.state = ClusterState(store, policy, clock, view, mac_bits, ids, new_uuid)
        self.queries = Queries(self.state)
        self.placement = Placer(self.state)
        self.commands = Commands(self.state, self.placement)
        self.migrations = MigrationCommands(self.state, self.placement)
        self.maintenance = self.migrations.hosts
        self.ha = HAManager(self.state, self.placement)
        self.netpaths = NetPaths(self.state, self.migrations, "controller:netpaths")

    @property
    def store(self) -> ClusterStore:
        return self.state.store

    @property
    def view(self) -> StoreCache | DirectView:
        return self.state.view

    @view.setter
    def view(self, view: StoreCache | DirectView) -> None:
        self.state.view = view

    @property
    def policy(self) -> Policy:
        return self.state.policy

    @property
    def clock(self) -> Clock:
        return self.state.clock

    @property
    def ids(self) -> Ids:
        return self.state.ids

    # -- reads -------------------------------------------------------------------------------
    def hosts(self) -> list[HostView]:
        return self.queries.hosts()

    def host(self, name: str) -> HostView:
        return self.queries.host(name)

    def vms(self, limit: int = 500, after: str = "") -> list[VMView]:
        return self.queries.vms(limit, after)

    def vm(self, name: str) -> VMView:
        return self.queries.vm(name)

    def pools(self) -> list[Pool]:
        return self.queries.pools()

    def networks(self) -> list[Network]:
        return self.queries.networks()

    def images(self) -> list[Image]:
        return self.queries.images()

    def profiles(self) -> list[InstallProfile]:
        return self.queries.profiles()

    def profile(self, name: str) -> InstallProfile:
        return self.queries.profile(name)

    def create_profile(self, req: ProfileCreate, actor: str) -> InstallProfile:
        return self.commands.create_profile(req, actor)

    def delete_profile(self, name: str, actor: str) -> None:
        self.commands.delete_profile(name, actor)

    def tasks(self, limit: int = 100) -> list[Task]:
        return self.queries.tasks(limit)

    def task(self, task_id: str) -> Task:
        return self.queries.task(task_id)

    def events(self, limit: int = 100, obj: str | None = None) -> list[Event]:
        return self.queries.events(limit, obj)

    # -- commands ----------------------------------------------------------------------------
    def create_vm(self, req: VMCreate, actor: str) -> tuple[VMView, Task]:
        return self.commands.create_vm(req, actor)

    def power(self, name: str, action: str, force: bool, actor: str) -> Task:
        return self.commands.power(name, action, force, actor)

    def delete(self, name: str, actor: str) -> Task:
        return self.commands.delete(name, actor)

    def create_pool(self, req: PoolCreate, actor: str) -> Pool:
        return self.commands.create_pool(req, actor)

    def create_network(self, req: NetworkCreate, actor: str) -> Network:
        return self.commands.create_network(req, actor)

    def import_image(self, req: ImageImport, actor: str) -> Image:
        return self.commands.import_image(req, actor)

    def place_unplaced(self, actor: str, fence: Fence = NO_FENCE) -> list[str]:
        return self.placement.place_unplaced(actor, fence)
