"""Where each record lives in the store. One place, so the layout can be read at a glance.

/kumo/hosts/<host>        HostRecord            agent (operator: schedulable)
/kumo/alive/<host>        HostRecord            agent, bound to its lease: host liveness is its
                                                 presence (the content, the record registered, is
                                                 not read); its mod revision is the agent's
                                                 fencing token (tests/unit/test_agent.py)
/kumo/vms/<vm>            VMSpec                API
/kumo/placement/<vm>      Placement             scheduler (compare-and-swap on sched-epoch)
/kumo/vmstatus/<vm>       VMStatus              agent of the host running it
/kumo/macs/<mac>          vm name               placement claims it with the VM; deleted with the VM
/kumo/migrations/<vm>     Migration             API creates; the source agent runs and removes it
/kumo/maintenance/<host>  Maintenance           API creates and removes; the leader drains
/kumo/fenced/<host>       FencedHost            leader (lease expired + grace) or API (`host fence
                                                 --confirm`); the leader removes it when the host
                                                 holds a lease again. Its mod revision fences
                                                 every recovery of the host's VMs
/kumo/paths/<host>        HostPaths             agent, bound to its lease: its public and storage
                                                 paths (agent/paths.py)
/kumo/degraded/<host>     Degraded              leader: a path of the host is down while most
                                                 other up hosts have it (server/netpaths.py)
/kumo/frozen/<host>       FrozenHost            agent, before a clean reboot (its VMs wait for it,
                                                 not recovered); the agent removes it when back
/kumo/ha/<vm>             HAStatus              leader: a VM HA is recovering (absent otherwise)
/kumo/pools/<pool>, /kumo/networks/<net>, /kumo/images/<image>    API
/kumo/pool-ids/<pool>     PoolIdentity          the first agent to see the shared pool (create once)
/kumo/tasks/<id>          Task                  API creates; agent/controllers finish
/kumo/events/<rev-ish>    Event                 everyone (append-only)
/kumo/tokens/<sha256>     TokenRecord           server
/kumo/leader              {"id": ...}           the leading server, bound to its lease
/kumo/sched-epoch         counter               every placement; serialises capacity checks
/kumo/config/migration    MigrationSettings     API (`kumo migration-policy set`)
/kumo/config/ha           HASettings            API (`kumo ha settings`); absent: the defaults
/kumo/config/cluster-cpu/<kvm|qemu>  ClusterCPU  an agent of that domain type: baseline of the
                                                 CPUs of every registered host of it (ADR 0007)
/kumo/agent-secret        secret                server at bootstrap; agents and servers present it
"""

from __future__ import annotations

ROOT = "/kumo/"
HOSTS = ROOT + "hosts/"
ALIVE = ROOT + "alive/"
VMS = ROOT + "vms/"
PLACEMENT = ROOT + "placement/"
VMSTATUS = ROOT + "vmstatus/"
MACS = ROOT + "macs/"
MIGRATIONS = ROOT + "migrations/"
MAINTENANCE = ROOT + "maintenance/"
FENCED = ROOT + "fenced/"
HA = ROOT + "ha/"
FROZEN = ROOT + "frozen/"
PATHS = ROOT + "paths/"
DEGRADED = ROOT + "degraded/"
POOLS = ROOT + "pools/"
POOL_IDS = ROOT + "pool-ids/"
NETWORKS = ROOT + "networks/"
IMAGES = ROOT + "images/"
PROFILES = ROOT + "profiles/"  # install profiles (model/profile.py)
TASKS = ROOT + "tasks/"
EVENTS = ROOT + "events/"
TOKENS = ROOT + "tokens/"
LEADER = ROOT + "leader"
SCHED_EPOCH = ROOT + "sched-epoch"
MIGRATION_SETTINGS = ROOT + "config/migration"
HA_SETTINGS = ROOT + "config/ha"
CLUSTER_CPU = ROOT + "config/cluster-cpu/"
AGENT_SECRET = ROOT + "agent-secret"
