"""Install profiles (#12) through the API and the CLI: create, list, show, delete; bad input
is a 4xx naming the field with nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from kumo.model.profile import InstallProfile
from kumo.provision.answer import shipped
from kumo.store import keys
from kumo.store.records import load
from tests.unit.test_api_errors import Api, _error, _fields

KS = "text\nreboot\n%post\ncurl -fsS {{ callback_url }}\n%end\n"


def body(**over: Any) -> dict[str, Any]:
    return {
        "name": "rocky9",
        "kind": "kickstart",
        "kernel": "http://198.18.0.1/rocky/vmlinuz",
        "initrd": "http://198.18.0.1/rocky/initrd.img",
        "answer_template": KS,
        "args": ["console=ttyS0", "inst.text"],
        "variables": {"timezone": "UTC"},
        **over,
    }


@pytest.fixture
def api() -> Api:
    return Api()


def test_a_profile_is_created_listed_shown_and_deleted(api: Api) -> None:
    r = api.client.post("/api/v1/profiles", json=body())
    assert r.status_code == 201, r.text
    stored = load(api.store, InstallProfile, keys.PROFILES + "rocky9")
    assert stored is not None and stored[0].args == ("console=ttyS0", "inst.text")
    assert [p["name"] for p in api.client.get("/api/v1/profiles").json()] == ["rocky9"]
    shown = api.client.get("/api/v1/profiles/rocky9").json()
    assert shown["answer_template"] == KS and shown["variables"] == {"timezone": "UTC"}
    assert _error(api.client.post("/api/v1/profiles", json=body()), 409)["field"] == "name"
    assert api.client.delete("/api/v1/profiles/rocky9").status_code == 204
    assert load(api.store, InstallProfile, keys.PROFILES + "rocky9") is None
    assert _error(api.client.get("/api/v1/profiles/rocky9"), 404)["field"] == "name"
    assert _error(api.client.delete("/api/v1/profiles/rocky9"), 404)["field"] == "name"


def test_a_kernel_from_the_image_store_must_be_there(api: Api) -> None:
    r = api.client.post("/api/v1/profiles", json=body(kernel="vmlinuz-rocky"))
    err = _error(r, 409)
    assert err["field"] == "kernel" and "no image named vmlinuz-rocky" in err["detail"]
    r = api.client.post("/api/v1/profiles", json=body(initrd="img"))  # the sim's image
    assert r.status_code == 201, r.text
    assert api.client.get("/api/v1/profiles/rocky9").json()["initrd"] == "img"


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"kind": "cloud-init"}, "kind"),
        ({"kernel": "ftp://x/vmlinuz"}, "kernel"),
        ({"initrd": "Not A Name"}, "initrd"),
        ({"answer_template": ""}, "answer_template"),
        ({"args": ["two words"]}, "args.0"),
        ({"variables": {"1st": "x"}}, "variables.1st.[key]"),
        ({"name": "Rocky"}, "name"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_writes_nothing(
    api: Api, over: dict[str, Any], field: str
) -> None:
    assert _fields(api.client.post("/api/v1/profiles", json=body(**over))) == [field]
    assert api.client.get("/api/v1/profiles").json() == []


def test_the_profile_model_refuses_what_the_api_refuses() -> None:
    good = {k: v for k, v in body().items() if k != "args"}
    assert InstallProfile.model_validate(good).kernel.startswith("http://")
    for over in ({"kernel": "ftp://x"}, {"variables": {"a-b": "x"}}, {"args": ("a b",)}):
        with pytest.raises(ValueError):
            InstallProfile.model_validate({**good, **over})


@pytest.mark.parametrize(
    ("over", "field", "says"),
    [
        ({"answer_template": "text\n{{ nope }}\nreboot\n"}, "answer_template", "'nope'"),
        ({"answer_template": "text\n{% if %}\n"}, "answer_template", "line 2"),
        ({"answer_template": "frobnicate\nreboot\n"}, "answer_template", "frobnicate"),
        (
            {"answer_template": "text\n%post\ncurl {{ callback_url }}\n%end\n"},
            "answer_template",
            "reboot",
        ),
        ({"kind": "preseed"}, "answer_template", ""),  # a Kickstart is no preseed
        ({"variables": {"name": "x"}}, "variables", "name"),  # would hide the VM's name
    ],
)
def test_a_template_that_does_not_render_or_check_is_422_naming_it(
    api: Api, over: dict[str, Any], field: str, says: str
) -> None:
    """The template is rendered for a sample VM and checked as its installer reads it
    (Kickstart through pykickstart), when the profile is created: a broken one is refused
    then, not when a VM's install hangs."""
    r = api.client.post("/api/v1/profiles", json=body(**over))
    assert _fields(r) == [field]
    assert says in r.json()["detail"], r.json()
    assert api.client.get("/api/v1/profiles").json() == []


@pytest.mark.parametrize("name", sorted(shipped()))
def test_every_shipped_template_makes_a_profile(api: Api, name: str) -> None:
    kind = name.split("-", 1)[0]
    r = api.client.post(
        "/api/v1/profiles", json=body(name="p", kind=kind, answer_template=shipped()[name])
    )
    assert r.status_code == 201, r.text
