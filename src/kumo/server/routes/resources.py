"""Pools, networks, images and install profiles: list and create (profiles: show, delete)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from kumo.model.common import Name
from kumo.model.host import Image, Network, Pool
from kumo.model.profile import InstallProfile
from kumo.server.routes.common import ACT, API, CREATE, READ, READ_ONE, Actor, router
from kumo.server.schemas import ImageImport, NetworkCreate, PoolCreate, ProfileCreate
from kumo.server.service import ClusterService

ProfileName = Annotated[Name, Path(description="the install profile's name")]


def resources_router(service: ClusterService) -> APIRouter:
    r = router()

    @r.get(f"{API}/pools", responses=READ)
    def list_pools(_a: Actor) -> list[Pool]:
        return service.pools()

    @r.post(f"{API}/pools", status_code=201, responses=CREATE)
    def create_pool(req: PoolCreate, a: Actor) -> Pool:
        return service.create_pool(req, a)

    @r.get(f"{API}/networks", responses=READ)
    def list_networks(_a: Actor) -> list[Network]:
        return service.networks()

    @r.post(f"{API}/networks", status_code=201, responses=CREATE)
    def create_network(req: NetworkCreate, a: Actor) -> Network:
        return service.create_network(req, a)

    @r.get(f"{API}/images", responses=READ)
    def list_images(_a: Actor) -> list[Image]:
        return service.images()

    @r.post(f"{API}/images", status_code=201, responses=CREATE)
    def import_image(req: ImageImport, a: Actor) -> Image:
        return service.import_image(req, a)

    @r.get(f"{API}/profiles", responses=READ)
    def list_profiles(_a: Actor) -> list[InstallProfile]:
        return service.profiles()

    @r.post(f"{API}/profiles", status_code=201, responses=CREATE)
    def create_profile(req: ProfileCreate, a: Actor) -> InstallProfile:
        return service.create_profile(req, a)

    @r.get(f"{API}/profiles/{{name}}", responses=READ_ONE)
    def show_profile(name: ProfileName, _a: Actor) -> InstallProfile:
        return service.profile(name)

    @r.delete(f"{API}/profiles/{{name}}", status_code=204, responses=ACT)
    def delete_profile(name: ProfileName, a: Actor) -> None:
        service.delete_profile(name, a)

    return r
