"""A scenario file (/work/shared/SCENARIOS.md; docs/simulator.md): a cluster, what happens to
it and when, and what must then be true, loaded from YAML into typed, validated models.

``load(path)`` reads one file with PyYAML's ``safe_load`` and answers a :class:`Scenario`, or
raises :class:`ScenarioError` whose message names the file, the entry (``vms[2]``,
``expect[4]`` with its line) and the field, and says what is allowed. Beyond each entry's
own fields it checks that every host and VM named (a VM's host, an event's ``do:``, an
expectation) exists and that every time lies within ``until``.

Pure: no clock, no store, no world; ``kumo.sim.runner`` runs what this loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationError,
    field_validator,
)

from kumo import faults as f
from kumo.model.common import Name

VMStateName = Literal["running", "stopped", "paused", "error", "recovering"]
HostStateName = Literal["up", "down", "fenced", "degraded", "draining", "maintenance"]
Seconds = Annotated[float, Field(ge=0)]


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file, entry and field."""


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class HostDef(_Entry):
    name: Name
    vcpus: int = Field(default=8, ge=1, le=4096)
    memory_mib: int = Field(default=8192, ge=256, le=64 * 1024 * 1024)


class VMDef(_Entry):
    name: Name
    host: Name | None = None  # where it runs at t=0; None: where the scheduler puts it
    vcpus: int = Field(default=1, ge=1, le=256)
    memory_mib: int = Field(default=512, ge=16, le=4 * 1024 * 1024)
    state: Literal["running", "stopped"] = "running"
    ha: Literal["restart", "off"] = "restart"
    priority: int = Field(default=0, ge=0, le=1000)
    hosts: tuple[Name, ...] = ()
    preferred: Name | None = None
    failback: bool = False
    anti_affinity: Name | None = None
    affinity: Name | None = None


class Settings(_Entry):
    """HA timings by the names of ``kumo.model.ha.HASettings`` (None: its default), and the
    runner's tick."""

    grace_s: float | None = Field(default=None, ge=0, le=600)
    lease_ttl_s: int | None = Field(default=None, ge=2, le=120)
    stabilisation_s: float | None = Field(default=None, ge=0, le=86_400)
    tick_s: float = Field(default=0.5, gt=0, le=1)  # virtual seconds per step


class EventDef(_Entry):
    at: Seconds
    do: f.Fault

    @field_validator("do", mode="plain")
    @classmethod
    def _parse(cls, value: object) -> f.Fault:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string such as `power-off h1`")
        return f.parse_fault(value)


class _At(_Entry):
    at: Seconds


class _Window(_Entry):
    start: Seconds = Field(alias="from")
    end: Seconds = Field(alias="to")


class RunningOn(_At):
    vm: Name
    running_on: tuple[Name, ...] = Field(min_length=1)


class VMStateIs(_At):
    vm: Name
    state: VMStateName


class HostFenced(_At):
    host: Name
    fenced: bool


class HostStateIs(_At):
    host: Name
    state: HostStateName


class Apart(_At):
    vms: tuple[Name, ...] = Field(min_length=2)
    apart: bool


class StaysOn(_Window):
    vm: Name
    stays_on: Name


class NeverOn(_Window):
    vm: Name
    never_on: tuple[Name, ...] = Field(min_length=1)


class MaxRestarts(_Window):
    vm: Name
    max_restarts: int = Field(ge=0)


class MaxMoves(_Window):
    vm: Name
    max_moves: int = Field(ge=0)


Expectation = (
    RunningOn
    | VMStateIs
    | HostFenced
    | HostStateIs
    | Apart
    | StaysOn
    | NeverOn
    | MaxRestarts
    | MaxMoves
)

# the key that tells an expectation's form -> its model (`state` is told apart by vm/host)
_FORMS: dict[str, type[_Entry]] = {
    "running_on": RunningOn,
    "stays_on": StaysOn,
    "never_on": NeverOn,
    "fenced": HostFenced,
    "apart": Apart,
    "max_restarts": MaxRestarts,
    "max_moves": MaxMoves,
}
FORMS = (*_FORMS, "state")


class Expect(BaseModel):
    """One expectation as written: its index, line and text (for a failure's message)."""

    model_config = ConfigDict(frozen=True)

    index: int
    line: int
    text: str
    check: Expectation

    def __str__(self) -> str:
        return f"expect[{self.index}] (line {self.line}) {self.text}"


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    line: int
    at: float
    do: SkipValidation[f.Fault]


class Scenario(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    description: str
    hosts: tuple[HostDef, ...]
    vms: tuple[VMDef, ...]
    settings: Settings
    events: tuple[Event, ...]
    until: float
    expect: tuple[Expect, ...]


_TOP = ("description", "hosts", "vms", "settings", "events", "until", "expect")
M = TypeVar("M", bound=BaseModel)


def _problem(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "value"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"field `{loc}`: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


class _Loader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = self._lines(text)

    @staticmethod
    def _lines(text: str) -> dict[tuple[str, int], int]:
        """(section, index) -> the 1-based line of each list entry, from PyYAML's nodes."""
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        out: dict[tuple[str, int], int] = {}
        if isinstance(root, yaml.MappingNode):
            for key, value in root.value:
                if isinstance(value, yaml.SequenceNode):
                    for i, item in enumerate(value.value):
                        out[(str(key.value), i)] = item.start_mark.line + 1
        return out

    def fail(self, where: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.path}: {where}: {problem}")

    def entry(self, section: str, i: int) -> str:
        line = self.lines.get((section, i))
        return f"{section}[{i}]" + (f" (line {line})" if line else "")

    def model(self, cls: type[M], data: object, where: str) -> M:
        if not isinstance(data, dict):
            raise self.fail(where, f"{data!r} is not a mapping of fields")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            allowed = ", ".join(
                (fi.alias or n) for n, fi in cls.model_fields.items() if n not in ("index",)
            )
            raise self.fail(where, f"{_problem(exc)} (allowed fields: {allowed})") from None

    def items(self, doc: dict[str, Any], section: str) -> list[object]:
        value = doc.get(section, [])
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(section, f"{value!r} is not a list")
        return value

    def host(self, i: int, item: object) -> HostDef:
        if isinstance(item, str):
            item = {"name": item}
        return self.model(HostDef, item, self.entry("hosts", i))

    def expectation(self, i: int, item: object) -> Expect:
        where = self.entry("expect", i)
        if not isinstance(item, dict):
            raise self.fail(where, f"{item!r} is not a mapping of fields")
        forms = [k for k in _FORMS if k in item]
        cls: type[_Entry]
        if len(forms) == 1:
            cls = _FORMS[forms[0]]
        elif not forms and "state" in item:
            cls = HostStateIs if "host" in item else VMStateIs
        else:
            found = ", ".join(forms) or "none"
            raise self.fail(where, f"one of {', '.join(FORMS)} is needed (found: {found})")
        check = self.model(cls, item, where)
        text = "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in item.items()) + "}"
        line = self.lines.get(("expect", i), 0)
        return Expect(index=i, line=line, text=text, check=check)  # type: ignore[arg-type]


def _plain(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load(path: str | Path) -> Scenario:
    """The scenario in ``path``; :class:`ScenarioError` if it cannot be run."""
    name = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScenarioError(f"{name}: cannot read: {exc.strerror}") from None
    return loads(text, name)


def loads(text: str, path: str = "<scenario>") -> Scenario:
    """The scenario in ``text`` (``path`` names it in messages)."""
    try:
        doc = yaml.safe_load(text)
        ld = _Loader(path, text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping with {', '.join(_TOP)}")
    unknown = sorted(set(doc) - set(_TOP))
    if unknown:
        raise ld.fail(str(unknown[0]), f"unknown section; allowed: {', '.join(_TOP)}")
    until = doc.get("until")
    if isinstance(until, bool) or not isinstance(until, int | float) or until <= 0:
        raise ld.fail("until", f"{until!r}: a positive number of virtual seconds is needed")
    hosts = tuple(ld.host(i, h) for i, h in enumerate(ld.items(doc, "hosts")))
    if not hosts:
        raise ld.fail("hosts", "at least one host is needed")
    vms = tuple(ld.model(VMDef, v, ld.entry("vms", i)) for i, v in enumerate(ld.items(doc, "vms")))
    events = []
    for i, item in enumerate(ld.items(doc, "events")):
        try:
            e = ld.model(EventDef, item, ld.entry("events", i))
        except f.FaultError as exc:
            raise ld.fail(ld.entry("events", i), str(exc)) from None
        events.append(Event(index=i, line=ld.lines.get(("events", i), 0), at=e.at, do=e.do))
    expect = tuple(ld.expectation(i, x) for i, x in enumerate(ld.items(doc, "expect")))
    settings = ld.model(Settings, doc.get("settings") or {}, "settings")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ld.fail("description", "a string is needed")
    s = Scenario(
        path=path,
        description=description,
        hosts=hosts,
        vms=vms,
        settings=settings,
        events=tuple(events),
        until=float(until),
        expect=expect,
    )
    _check_names(s, ld)
    return s


def _check_names(s: Scenario, ld: _Loader) -> None:
    """Every host and VM named exists, once; every time lies within ``until``."""
    hosts = [h.name for h in s.hosts]
    vms = [v.name for v in s.vms]
    for section, names in (("hosts", hosts), ("vms", vms)):
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ld.fail(ld.entry(section, i), f"field `name`: {n} is named twice")
    known_h, known_v = ", ".join(hosts), ", ".join(vms) or "none"

    def need(where: str, field: str, name: str | None, kind: str) -> None:
        if name is None:
            return
        known = hosts if kind == "host" else vms
        if name not in known:
            listed = known_h if kind == "host" else known_v
            raise ld.fail(where, f"field `{field}`: no {kind} named {name} (known: {listed})")

    for i, v in enumerate(s.vms):
        where = ld.entry("vms", i)
        need(where, "host", v.host, "host")
        need(where, "preferred", v.preferred, "host")
        for h in v.hosts:
            need(where, "hosts", h, "host")
    for e in s.events:
        where = ld.entry("events", e.index)
        if e.at > s.until:
            raise ld.fail(where, f"field `at`: {e.at:g} is after until ({s.until:g})")
        for field in ("host", "target"):
            need(where, "do", getattr(e.do, field, None), "host")
        need(where, "do", getattr(e.do, "vm", None), "vm")
    for x in s.expect:
        where = ld.entry("expect", x.index)
        c = x.check
        times = [c.at] if isinstance(c, _At) else [c.start, c.end]
        if isinstance(c, _Window) and c.start > c.end:
            raise ld.fail(where, f"field `from`: {c.start:g} is after `to` ({c.end:g})")
        if max(times) > s.until:
            raise ld.fail(where, f"a time ({max(times):g}) is after until ({s.until:g})")
        need(where, "host", getattr(c, "host", None), "host")
        need(where, "vm", getattr(c, "vm", None), "vm")
        named = [*getattr(c, "running_on", ()), *getattr(c, "never_on", ())]
        for h in [*named, *([c.stays_on] if isinstance(c, StaysOn) else [])]:
            need(where, "host", h, "host")
        for v in getattr(c, "vms", ()):
            need(where, "vms", v, "vm")
