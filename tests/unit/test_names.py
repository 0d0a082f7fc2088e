"""Names and other patterned strings are matched whole: a trailing newline is refused
(Python's ``re`` lets ``$`` match before one; pydantic's Rust regex does not, checked here)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import UnionType
from typing import Annotated, Any, get_args, get_origin

import pytest
from pydantic import AfterValidator, BaseModel, TypeAdapter, ValidationError

import kumo.model
from kumo.model.common import NAME_MAX_LENGTH, NAME_PATTERN, check_name
from kumo.model.host import Network
from kumo.model.vm import Nic, VMSpec
from kumo.sim.cluster import vm_spec


def _models() -> list[type[BaseModel]]:
    modules = [
        importlib.import_module(f"kumo.model.{m.name}")
        for m in pkgutil.iter_modules(kumo.model.__path__)
    ]
    modules.append(importlib.import_module("kumo.server.schemas"))
    found = {
        cls
        for mod in modules
        for _, cls in inspect.getmembers(mod, inspect.isclass)
        if issubclass(cls, BaseModel) and cls.__module__ == mod.__name__
    }
    return sorted(found, key=lambda c: c.__qualname__)


def _names_a_name(annotation: Any, metadata: list[Any]) -> bool:
    if any(isinstance(m, AfterValidator) and m.func is check_name for m in metadata):
        return True
    if get_origin(annotation) is Annotated:
        return _names_a_name(get_args(annotation)[0], list(annotation.__metadata__))
    return any(_names_a_name(a, []) for a in get_args(annotation))


def _name_fields() -> list[tuple[str, Any]]:
    out = []
    for cls in _models():
        for field, info in cls.model_fields.items():
            if _names_a_name(info.annotation, info.metadata):
                typ = (
                    Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
                )
                out.append((f"{cls.__qualname__}.{field}", typ))
    return out


NAME_FIELDS = _name_fields()


def test_name_fields_are_found() -> None:
    found = {f for f, _ in NAME_FIELDS}
    assert {"VMSpec.name", "VMSpec.image", "PlacementRules.host", "VMCreate.networks"} <= found


@pytest.mark.parametrize(("field", "typ"), NAME_FIELDS, ids=[f for f, _ in NAME_FIELDS])
def test_every_name_field_refuses_a_trailing_newline(field: str, typ: Any) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(typ)
    inner = get_args(typ)[0] if get_origin(typ) is Annotated else typ
    if get_origin(inner) is UnionType:  # an optional list of names: the list
        inner = next(a for a in get_args(inner) if a is not type(None))
    wrap = (lambda v: [v]) if get_origin(inner) in (list, tuple) else (lambda v: v)
    assert adapter.validate_python(wrap("web1")) in ("web1", ["web1"], ("web1",))
    with pytest.raises(ValidationError, match="not a valid name"):
        adapter.validate_python(wrap("web1\n"))


@pytest.mark.parametrize(
    "name", ["a", "web1", "a-b", "a" * NAME_MAX_LENGTH, "web1\n", "\nweb1", "-a", "a-", "A"]
)
def test_the_pattern_is_the_rule(name: str) -> None:
    """NAME_PATTERN (published in the OpenAPI document) and check_name agree, and the pattern
    reads the same as an ECMA regex: no Python-only syntax."""
    assert re.fullmatch(r"[\^\[\]a-z0-9\-(){},?$]+", NAME_PATTERN)
    valid = bool(re.fullmatch(NAME_PATTERN, name))
    assert valid == (name in ("a", "web1", "a-b", "a" * NAME_MAX_LENGTH))
    try:
        check_name(name)
        checked = True
    except ValueError:
        checked = False
    assert checked == valid


def test_too_long_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        check_name("a" * (NAME_MAX_LENGTH + 1))


@pytest.mark.parametrize(
    ("model", "field", "good"),
    [
        (Nic, "mac", "52:54:00:00:00:01"),
        (VMSpec, "cpu_model", "qemu64"),
        (Network, "bridge", "br0"),
    ],
)
def test_pydantic_patterns_refuse_a_trailing_newline(
    model: type[BaseModel], field: str, good: str
) -> None:
    base: dict[str, Any] = {
        Nic: {"network": "public", "mac": "52:54:00:00:00:01"},
        VMSpec: vm_spec("web1").model_dump(),
        Network: {"name": "public", "bridge": "br0"},
    }[model]
    model.model_validate({**base, field: good})
    with pytest.raises(ValidationError, match=field):
        model.model_validate({**base, field: good + "\n"})
