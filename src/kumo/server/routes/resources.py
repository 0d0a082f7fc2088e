"""Pools, networks and images: list and create."""

from __future__ import annotations

from fastapi import APIRouter

from kumo.model.host import Image, Network, Pool
from kumo.server.routes.common import API, CREATE, READ, Actor, router
from kumo.server.schemas import ImageImport, NetworkCreate, PoolCreate
from kumo.server.service import ClusterService


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

    return r
