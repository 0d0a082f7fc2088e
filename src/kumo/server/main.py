"""`kumo server`: API + leader-elected controllers in one process."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path

import uvicorn

from kumo.scheduler.placement import Policy
from kumo.server.app import create_app
from kumo.server.auth import bootstrap
from kumo.server.controllers import Controllers
from kumo.server.leader import LeaderElector, run_elected
from kumo.server.service import ClusterService
from kumo.store.base import StoreUnavailable
from kumo.store.cache import StoreCache
from kumo.store.etcd import EtcdStore

log = logging.getLogger("kumo.server")


def serve(
    etcd: str,
    host: str,
    port: int,
    token_file: Path | None,
    ident: str | None,
    policy: Policy | None = None,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = EtcdStore(etcd)
    ident = ident or f"{socket.gethostname()}:{port}:{os.getpid()}"
    while True:
        try:
            token = bootstrap(store)
            break
        except StoreUnavailable as exc:
            log.warning("%s; waiting for etcd", exc)
            threading.Event().wait(1)
    if token:
        print(
            f"kumo: first start; the admin token (shown once, stored hashed): {token}", flush=True
        )
        if token_file:
            token_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
    cache = StoreCache(store)
    cache.start()
    service = ClusterService(store, policy=policy, view=cache)
    elector = LeaderElector(store, ident)
    stop = threading.Event()
    controllers = Controllers(service, fence=elector.fence)
    threading.Thread(
        target=run_elected,
        args=(elector, controllers.run_once, stop),
        daemon=True,
        name="controllers",
    ).start()
    app = create_app(service, elector)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        stop.set()
        elector.resign()
        sys.stdout.flush()
