"""The API keeps its OpenAPI contract: schemathesis generates requests from the published
document (valid and invalid ones) against the app on the in-memory store, and checks every
answer with all its checks: status codes and bodies as documented, valid data accepted,
invalid data refused, auth enforced, the Allow header of a 405, and more. Its stateful phase
chains operations through the links it infers (create a VM, then stop, migrate, delete it).

Bounded and reproducible: 25 examples an operation, derandomized, no example database."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import httpx
import hypothesis
import schemathesis
from schemathesis.generation.case import Case

from kumo.model.migration import MigrationPolicy
from kumo.model.profile import VARIABLE
from kumo.provision.answer import AnswerContext, shipped
from kumo.server.app import create_app
from kumo.server.auth import bootstrap
from kumo.server.schemas import VMCreate
from kumo.server.service import ClusterService
from kumo.sim.cluster import define_basics, register_hosts, sim_host
from kumo.store import keys
from kumo.store.base import Delete
from kumo.store.memory import MemoryStore, _MemoryWatch

MAX_EXAMPLES = 25


class EndingWatches(MemoryStore):
    """A memory store whose watches end at once, so that ``events?follow=true`` sends the
    past events and closes instead of streaming for ever."""

    def watch(self, prefix: str, start_revision: int) -> _MemoryWatch:
        w = super().watch(prefix, start_revision)
        w.cancel()
        return w


def _agent(request: httpx.Request) -> httpx.Response:
    """The hosts' agents: every VM's console log is one line."""
    vm = request.url.path.rsplit("/", 1)[-1]
    return httpx.Response(200, text=f"{vm} login: \n")


def _app() -> tuple[Any, str, EndingWatches]:
    store = EndingWatches()
    token = bootstrap(store)
    assert token
    register_hosts(store, [sim_host(h) for h in ("h1", "h2", "h3")])
    service = ClusterService(store)
    define_basics(service)
    # The VM and host the document's examples name, so the examples phase reaches them.
    service.create_vm(VMCreate(name="web1", image="img", memory_mib=128), "test")
    app = create_app(service, agents=httpx.Client(transport=httpx.MockTransport(_agent)))
    return app, token, store


APP, TOKEN, STORE = _app()
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)
schema.config.update(headers={"Authorization": f"Bearer {TOKEN}"})
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
schema.config.seed = 8


# Where each operation's body carries a migration policy: (the policy, whether the fields it
# leaves out keep the defaults, as a cluster policy does, or the policy beneath, as an
# override does).
_POLICIES: dict[tuple[str, str], tuple[Callable[[dict[str, Any]], Any], bool]] = {
    ("PUT", "/api/v1/migration-policy"): (lambda b: b.get("policy"), True),
    ("PUT", "/api/v1/vms/{name}/migration-policy"): (lambda b: b, False),
    ("POST", "/api/v1/vms/{name}/migrate"): (lambda b: b.get("policy"), False),
}


@schema.hook("filter_case")
def downtime_rule(_ctx: schemathesis.HookContext, case: Case[Any]) -> bool:
    """A migration policy has a rule between two fields that no JSON schema can state
    (``max_downtime_ms >= downtime_ms``; each operation's description says so, and
    test_api_errors checks the 422): a "valid" case whose body breaks it on its own is not
    valid. (Over the cluster's policy, the answer is a 409, which valid data may get.)"""
    where = _POLICIES.get((case.method, case.path))
    if where is None or case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    if not isinstance(case.body, dict):
        return True
    policy, defaults = where[0](case.body), where[1]
    if not isinstance(policy, dict):
        return True  # the defaults keep the rule; no override is fine alone
    if defaults:
        base = MigrationPolicy()
        policy = {
            "downtime_ms": base.downtime_ms,
            "max_downtime_ms": base.max_downtime_ms,
            **policy,
        }
    downtime, ceiling = policy.get("downtime_ms"), policy.get("max_downtime_ms")
    if isinstance(downtime, int | float) and isinstance(ceiling, int | float):
        return ceiling >= downtime
    return True


# Where each operation's body carries an HA policy.
_HA: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
    ("POST", "/api/v1/vms"): lambda b: b.get("ha"),
    ("PUT", "/api/v1/vms/{name}/ha"): lambda b: b,
}


@schema.hook("filter_case")
def preferred_rule(_ctx: schemathesis.HookContext, case: Case[Any]) -> bool:
    """An HA policy's ``preferred`` must be one of its ``hosts`` when both are given, a rule
    no JSON schema states (the operations' descriptions do; test_ha_api checks the 422): a
    "valid" case that breaks it is not valid."""
    where = _HA.get((case.method, case.path))
    if where is None or case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    policy = where(case.body) if isinstance(case.body, dict) else None
    if not isinstance(policy, dict):
        return True
    hosts, preferred = policy.get("hosts"), policy.get("preferred")
    return not (isinstance(hosts, list) and isinstance(preferred, str) and preferred not in hosts)


@schema.hook("filter_case")
def gateway_rule(_ctx: schemathesis.HookContext, case: Case[Any]) -> bool:
    """A network's ``gateway`` needs its ``cidr`` and must be inside it, a rule no JSON schema
    states (the field's description does; test_api_errors checks the 422)."""
    if (case.method, case.path) != ("POST", "/api/v1/networks"):
        return True
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    body = case.body if isinstance(case.body, dict) else {}
    gateway, cidr = body.get("gateway"), body.get("cidr")
    if not isinstance(gateway, str):
        return True
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_address(gateway) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return True


@schema.hook("filter_case")
def nbd_rule(_ctx: schemathesis.HookContext, case: Case[Any]) -> bool:
    """A pool's ``nbd`` is for shared-dir pools only (the field's description says so;
    test_api_errors checks the 422)."""
    if (case.method, case.path) != ("POST", "/api/v1/pools"):
        return True
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    body = case.body if isinstance(case.body, dict) else {}
    return body.get("nbd") is None or body.get("kind", "shared-dir") == "shared-dir"


@schema.hook("filter_case")
def variable_names(_ctx: schemathesis.HookContext, case: Case[Any]) -> bool:
    """A profile's variable names must be template identifiers: the rule is on the keys of an
    object, which the published schema leaves to the description (pydantic does not emit
    ``propertyNames``); test_profiles checks the 422."""
    if (case.method, case.path) != ("POST", "/api/v1/profiles"):
        return True
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return True
    body = case.body if isinstance(case.body, dict) else {}
    variables = body.get("variables")
    return not isinstance(variables, dict) or all(
        isinstance(k, str) and VARIABLE.fullmatch(k) for k in variables
    )


_TEMPLATES = {name.split("-", 1)[0]: text for name, text in shipped().items()}


@schema.hook("map_case")
def valid_template(_ctx: schemathesis.HookContext, case: Case[Any]) -> Case[Any]:
    """A profile's template must render for a sample VM and check as its installer reads it,
    a rule beyond any schema (test_profiles checks the 422s): a valid case gets the shipped
    example of its kind, and no variable named like one kumo gives every template."""
    if (case.method, case.path) != ("POST", "/api/v1/profiles"):
        return case
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    kind = case.body.get("kind") if isinstance(case.body, dict) else None
    if isinstance(case.body, dict) and isinstance(kind, str) and kind in _TEMPLATES:
        case.body["answer_template"] = _TEMPLATES[kind]
        variables = case.body.get("variables")
        if isinstance(variables, dict):
            reserved = set(AnswerContext.model_fields)
            case.body["variables"] = {k: v for k, v in variables.items() if k not in reserved}
    return case


@schema.parametrize()
@hypothesis.settings(derandomize=True, database=None, deadline=None)
def test_every_operation_keeps_the_contract(case: Case[Any]) -> None:
    case.call_and_validate()


class Chains(schema.as_state_machine()):  # type: ignore[misc]
    def setup(self) -> None:
        """Each chain starts with no install profile: one created by an earlier chain would
        make its create answer 409 where it answered 201, links would differ between runs of
        one example, and Hypothesis calls that flaky data generation."""
        STORE.commit([], [Delete(e.key) for e in STORE.range(keys.PROFILES)])


def test_chained_operations_keep_the_contract() -> None:
    machine = Chains
    machine.run(
        settings=hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=6,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
