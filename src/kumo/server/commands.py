"""VM, pool, network and image commands behind the API: each checks its arguments, then the
cluster's state, then writes everything it changes in one compare-and-swap commit (nothing
half-applied). A new VM is placed and committed by the ``Placer``."""

from __future__ import annotations

from kumo.model.activity import Task, TaskState
from kumo.model.cpu import ClusterCPU
from kumo.model.ha import FencedHost, HAMode, HASettings, HASpec
from kumo.model.host import HostRecord, Image, Network, Pool
from kumo.model.profile import InstallKind, InstallProfile, is_url
from kumo.model.vm import Nic, Placement, PlacementRules, Power, VMSpec
from kumo.provision.answer import AnswerError, render_checked, sample_context
from kumo.scheduler.cpu import default_baseline, vm_cpu
from kumo.server.errors import Conflict, Invalid, NotFound
from kumo.server.macs import draw_macs
from kumo.server.placement import Placer
from kumo.server.queries import vm_view
from kumo.server.schemas import (
    HAPolicy,
    HASettingsChange,
    ImageImport,
    NetworkCreate,
    PoolCreate,
    ProfileCreate,
    VMCreate,
    VMView,
)
from kumo.server.state import ClusterState
from kumo.store import keys
from kumo.store.activity import event_op, new_task
from kumo.store.base import Compare, Delete, Put
from kumo.store.records import load, put


class Commands:
    def __init__(self, state: ClusterState, placer: Placer) -> None:
        self.state = state
        self.placer = placer

    # -- VMs -------------------------------------------------------------------------------
    def create_vm(self, req: VMCreate, actor: str) -> tuple[VMView, Task]:
        # Checks read the cache, which holds every write of this replica (write-through);
        # the commit's compares catch what another replica changed meanwhile (then we sync
        # and decide again).
        st, view = self.state, self.state.view
        ha = self.ha_spec(req.ha, "ha.")
        images = view.models(Image, keys.IMAGES)
        if not st.fresh(req.image in images):
            images = view.models(Image, keys.IMAGES)
        if req.image not in images:
            known = ", ".join(sorted(images)) or "none"
            raise Conflict(f"image: no image named {req.image} (known: {known})", "image")
        image = images[req.image]
        pool = req.pool or image[0].pool
        st.fresh(view.get(keys.POOLS + pool) is not None)
        if view.get(keys.POOLS + pool) is None:
            raise Conflict(f"pool: no pool named {pool}", "pool")
        if pool != image[0].pool:
            raise Conflict(
                f"pool: image {req.image} is in pool {image[0].pool}; a VM's disk is "
                f"made in the image's pool",
                "pool",
            )
        nets = view.models(Network, keys.NETWORKS)
        if not st.fresh(all(n in nets for n in req.networks)):
            nets = view.models(Network, keys.NETWORKS)
        for n in req.networks:
            if n not in nets:
                raise Conflict(
                    f"networks: no network named {n} (known: {', '.join(sorted(nets)) or 'none'})",
                    "networks",
                )
        disk = req.disk_gib or image[0].size_gib
        if disk < image[0].size_gib:
            raise Conflict(
                f"disk_gib: {disk} is smaller than image {req.image} ({image[0].size_gib} GiB)",
                "disk_gib",
            )
        if req.host is not None:
            st.fresh(view.get(keys.HOSTS + req.host) is not None)
            if view.get(keys.HOSTS + req.host) is None:
                raise Conflict(f"host: no host named {req.host}", "host")
        vm_uuid = st.new_uuid()
        task = new_task("vm.create", f"vm/{req.name}", actor, st.clock.now(), ids=st.ids)
        macs = draw_macs(len(req.networks), lambda _: False, st.mac_bits)  # checked when placed
        spec = VMSpec(
            name=req.name,
            uuid=vm_uuid,
            vcpus=req.vcpus,
            memory_mib=req.memory_mib,
            disk_gib=disk,
            image=req.image,
            pool=pool,
            clone=req.clone,
            nics=tuple(Nic(network=n, mac=m) for n, m in zip(req.networks, macs, strict=True)),
            boot=tuple(req.boot),
            ssh_keys=tuple(req.ssh_keys),
            cpu_model=req.cpu_model,
            cpu=vm_cpu(req.cpu_model, self._cluster_cpu(req.host)),
            runcmd=tuple(req.runcmd),
            placement=PlacementRules(
                host=req.host, affinity=req.affinity, anti_affinity=req.anti_affinity
            ),
            ha=ha,
            power=Power.RUNNING if req.start else Power.STOPPED,
            stop_timeout_s=req.stop_timeout_s,
            task=task.id,
            created_at=st.clock.now(),
        )
        host, spec = self.placer.place_and_commit(
            spec,
            [Compare(keys.VMS + spec.name, 0)],
            [put(keys.TASKS + task.id, task)],
            actor,
            on_lost=lambda: self._exists(spec.name),
            new=True,
        )
        # The scheduler chose a live host.
        return vm_view(spec, Placement(host=host, at=st.clock.now()), None, True), task

    def _cluster_cpu(self, host: str | None) -> ClusterCPU | None:
        """The default guest CPU the agents computed (ADR 0007) for the domain type of
        ``host``, or of most hosts; None if none."""
        view = self.state.view
        baselines = {t: c for t, (c, _) in view.models(ClusterCPU, keys.CLUSTER_CPU).items()}
        hosts = {n: r for n, (r, _) in view.models(HostRecord, keys.HOSTS).items()}
        return default_baseline(baselines, hosts, host)

    def _exists(self, name: str) -> None:
        if self.state.view.get(keys.VMS + name) is not None:
            raise Conflict(f"name: vm {name} already exists", "name")

    def power(self, name: str, action: str, force: bool, actor: str) -> Task:
        st = self.state
        spec, rev = st.spec(name)
        if spec.deleting:
            raise Conflict(f"vm {name} is being deleted")
        task = new_task(f"vm.{action}", f"vm/{name}", actor, st.clock.now(), ids=st.ids)
        if action == "start":
            change: dict[str, object] = {"power": Power.RUNNING}
        elif action == "stop":
            change = {"power": Power.STOPPED, "stop_mode": "force" if force else "acpi"}
        elif action == "reboot":
            if spec.power != Power.RUNNING:
                raise Conflict(f"vm {name} is stopped; start it instead of rebooting it")
            change = {
                "reboot_generation": spec.reboot_generation + 1,
                "reboot_mode": "reset" if force else "acpi",
            }
        else:
            raise Invalid(f"action: {action!r} is not start, stop or reboot", "action")
        self._update(spec, rev, change, task, actor)
        return task

    def delete(self, name: str, actor: str) -> Task:
        st = self.state
        spec, rev = st.spec(name)
        task = new_task("vm.delete", f"vm/{name}", actor, st.clock.now(), ids=st.ids)
        if st.store.get(keys.PLACEMENT + name) is None:
            # never placed: nothing exists on any host
            done = task.model_copy(
                update={"state": TaskState.SUCCEEDED, "progress": 1.0, "message": f"{name} deleted"}
            )
            ops: list[Put | Delete] = [put(keys.TASKS + task.id, done)]
            ops += [Delete(keys.VMS + name), *(Delete(keys.MACS + n.mac) for n in spec.nics)]
            if st.commit([Compare(keys.VMS + name, rev)], ops) is None:
                raise Conflict(f"vm {name} changed meanwhile; try again")
            return task
        self._update(spec, rev, {"deleting": True, "power": Power.STOPPED}, task, actor)
        return task

    def _update(
        self, spec: VMSpec, rev: int, change: dict[str, object], task: Task, actor: str
    ) -> None:
        updated = spec.model_copy(update={**change, "task": task.id})
        ops: list[Put | Delete] = [
            put(keys.VMS + spec.name, updated),
            put(keys.TASKS + task.id, task),
            event_op(
                actor,
                f"vm/{spec.name}",
                task.kind.removeprefix("vm."),
                f"requested ({task.id})",
                task.updated_at,
                ids=self.state.ids,
            ),
        ]
        ops += self.state.cancel_ops(spec.task, f"superseded by {task.id}")
        if self.state.commit([Compare(keys.VMS + spec.name, rev)], ops) is None:
            raise Conflict(f"vm {spec.name} changed meanwhile; try again")

    # -- HA ----------------------------------------------------------------------------------
    def ha_spec(self, policy: HAPolicy, prefix: str = "") -> HASpec:
        """The policy as stored, once its hosts are known: 422 when ``preferred`` is not in
        ``hosts``, 409 naming the field for a host that is not registered (``prefix``: where
        the policy sits in the body, ``ha.`` at create)."""
        hosts = tuple(dict.fromkeys(policy.hosts or ()))  # a host named twice counts once
        if policy.hosts is not None and policy.preferred not in (None, *hosts):
            raise Invalid(
                f"{prefix}preferred: {policy.preferred} is not one of {prefix}hosts "
                f"({', '.join(hosts)})",
                f"{prefix}preferred",
            )
        st, view = self.state, self.state.view
        wanted = [*hosts, *([policy.preferred] if policy.preferred else [])]
        st.fresh(all(view.get(keys.HOSTS + h) is not None for h in wanted))  # syncs if not
        known = {e.key[len(keys.HOSTS) :] for e in view.range(keys.HOSTS)}
        names = ", ".join(sorted(known)) or "none"
        for h, field in [*((h, "hosts") for h in hosts), (policy.preferred, "preferred")]:
            if h is not None and h not in known:
                raise Conflict(
                    f"{prefix}{field}: no host named {h} (known: {names})",
                    prefix + field,
                )
        return HASpec(
            mode=HAMode(policy.mode),
            priority=policy.priority,
            hosts=hosts,
            preferred=policy.preferred,
            failback=policy.failback,
            max_restart=policy.max_restart,
            max_relocate=policy.max_relocate,
        )

    def set_ha(self, name: str, policy: HAPolicy, actor: str) -> HASpec:
        """Replace the VM's HA policy. It applies from the next placement or recovery: a VM
        running on a host outside its new ``hosts`` is not moved now."""
        st = self.state
        spec, rev = st.spec(name)
        ha = self.ha_spec(policy)
        if spec.deleting:
            raise Conflict(f"vm {name} is being deleted")
        updated = spec.model_copy(update={"ha": ha})
        event = st.event(actor, f"vm/{name}", "ha-policy", ha.model_dump_json())
        if (
            st.commit([Compare(keys.VMS + name, rev)], [put(keys.VMS + name, updated), event])
            is None
        ):
            raise Conflict(f"vm {name} changed meanwhile; try again")
        return ha

    def fence_host(self, name: str, actor: str, force: bool = False) -> FencedHost:
        """Record an operator's (or fence device's) word that ``name`` is off, so HA runs its
        VMs elsewhere at once, without the grace. While its agent's lease is still live (it
        renewed within the TTL) the word is refused unless ``force``: then the host's alive
        key goes in the same transaction and its lease is revoked, so its agent, if it runs
        after all, finds its lease lost and stops its HA VMs itself (docs/control-plane.md).
        Fencing a fenced host changes nothing and answers its record."""
        st = self.state
        if load(st.store, HostRecord, keys.HOSTS + name) is None:
            raise NotFound(f"host {name} does not exist", "name")
        found = load(st.store, FencedHost, keys.FENCED + name)
        if found is not None:
            return found[0]
        alive = st.store.get(keys.ALIVE + name)
        if alive is not None and not force:
            raise Conflict(
                f"host {name}'s agent holds a live lease (renewed within its TTL): it may "
                "still run its VMs; if you know it is off, fence it with force (its lease is "
                "revoked), or wait until the lease expires",
                "name",
            )
        reason = f"confirmed by {actor}" + (" (forced: its lease was live)" if alive else "")
        fenced = FencedHost(host=name, at=st.clock.now(), reason=reason, by=actor)
        ops: list[Put | Delete] = [
            put(keys.FENCED + name, fenced),
            st.event(actor, f"host/{name}", "fenced", reason),
        ]
        if alive is not None:
            ops.append(Delete(keys.ALIVE + name))
        compares = [
            Compare(keys.ALIVE + name, alive.mod_revision if alive else 0),
            Compare(keys.FENCED + name, 0),
        ]
        if st.commit(compares, ops) is None:
            raise Conflict(f"host {name} changed meanwhile (its agent came back?); try again")
        if alive is not None and alive.lease:
            st.store.revoke(alive.lease)
        return fenced

    def set_ha_settings(self, change: HASettingsChange, actor: str) -> HASettings:
        """Replace the HA timings an operator may change; the lease TTL stays."""
        st = self.state
        found = st.store.get(keys.HA_SETTINGS)
        current = load(st.store, HASettings, keys.HA_SETTINGS)
        new = HASettings(
            lease_ttl_s=current[0].lease_ttl_s if current else HASettings().lease_ttl_s,
            grace_s=float(change.grace_s),
            stabilisation_s=float(change.stabilisation_s),
            path_interval_s=float(change.path_interval_s),
            path_misses=change.path_misses,
            path_up_s=float(change.path_up_s),
        )
        ok = st.commit(
            [Compare(keys.HA_SETTINGS, found.mod_revision if found else 0)],
            [
                put(keys.HA_SETTINGS, new),
                st.event(actor, "cluster/ha", "settings", new.model_dump_json()),
            ],
        )
        if ok is None:
            raise Conflict("the HA settings changed meanwhile; try again")
        return new

    # -- pools, networks, images -------------------------------------------------------------
    def _create(
        self, key: str, model: Pool | Network | Image | InstallProfile, kind: str, actor: str
    ) -> None:
        st = self.state
        ok = st.commit(
            [Compare(key, 0)],
            [
                put(key, model),
                event_op(actor, f"{kind}/{model.name}", "created", "", st.clock.now(), ids=st.ids),
            ],
        )
        if ok is None:
            raise Conflict(f"name: {kind} {model.name} already exists", "name")

    def create_pool(self, req: PoolCreate, actor: str) -> Pool:
        pool = Pool(name=req.name, kind=req.kind, path=req.path, nas=tuple(req.nas), nbd=req.nbd)
        self._create(keys.POOLS + req.name, pool, "pool", actor)
        return pool

    def create_network(self, req: NetworkCreate, actor: str) -> Network:
        net = Network(name=req.name, bridge=req.bridge, cidr=req.cidr, gateway=req.gateway)
        self._create(keys.NETWORKS + req.name, net, "network", actor)
        return net

    def create_profile(self, req: ProfileCreate, actor: str) -> InstallProfile:
        """An install profile; its kernel and initrd images must exist (URLs are the site's
        to serve), its template must render and check for its kind (provision/answer.py)."""
        for field, source in (("kernel", req.kernel), ("initrd", req.initrd)):
            if not is_url(source) and load(self.state.store, Image, keys.IMAGES + source) is None:
                raise Conflict(
                    f"{field}: no image named {source}; import it (kumo image import) or "
                    "give an http(s) URL",
                    field,
                )
        try:  # rendered for a sample VM and checked as its installer would read it
            render_checked(req.answer_template, sample_context(req.kind, req.variables))
        except AnswerError as exc:
            raise Invalid(str(exc), exc.field) from None
        profile = InstallProfile(
            name=req.name,
            kind=InstallKind(req.kind),
            kernel=req.kernel,
            initrd=req.initrd,
            answer_template=req.answer_template,
            args=tuple(req.args),
            variables=dict(req.variables),
            created_at=self.state.clock.now(),
        )
        self._create(keys.PROFILES + req.name, profile, "profile", actor)
        return profile

    def delete_profile(self, name: str, actor: str) -> None:
        st = self.state
        found = load(st.store, InstallProfile, keys.PROFILES + name)
        if found is None:
            raise NotFound(f"name: no profile named {name}", "name")
        _, rev = found
        ok = st.commit(
            [Compare(keys.PROFILES + name, rev)],
            [
                Delete(keys.PROFILES + name),
                event_op(actor, f"profile/{name}", "deleted", "", st.clock.now(), ids=st.ids),
            ],
        )
        if ok is None:
            raise Conflict(f"name: profile {name} changed meanwhile; try again", "name")

    def import_image(self, req: ImageImport, actor: str) -> Image:
        if load(self.state.store, Pool, keys.POOLS + req.pool) is None:
            raise Conflict(f"pool: no pool named {req.pool}", "pool")
        image = Image(
            name=req.name,
            pool=req.pool,
            path=req.path,
            format=req.format,
            size_gib=req.size_gib,
            created_at=self.state.clock.now(),
        )
        self._create(keys.IMAGES + req.name, image, "image", actor)
        return image
