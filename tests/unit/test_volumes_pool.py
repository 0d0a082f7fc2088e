"""A pool's NBD server, as the model reads it (the API's pattern is in test_api_errors)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kumo.model.host import Pool, nbd_server


def test_an_nbd_server_is_an_ipv4_address_and_a_port() -> None:
    assert nbd_server("198.18.1.10:10809") == ("198.18.1.10", 10809)
    for bad in ("198.18.1.10", "198.18.1.10:0", "198.18.1.10:65536", "nas1:10809", ":10809"):
        with pytest.raises(ValueError, match="is not an NBD server"):
            nbd_server(bad)


def test_only_a_shared_pool_is_served_over_nbd() -> None:
    pool = Pool(name="p", kind="shared-dir", path="/p", nbd="198.18.1.10:10809")
    assert pool.nbd == "198.18.1.10:10809"
    with pytest.raises(ValidationError, match="only a shared-dir pool"):
        Pool(name="p", kind="local-dir", path="/p", nbd="198.18.1.10:10809")
    with pytest.raises(ValidationError, match="is not an NBD server"):
        Pool(name="p", kind="shared-dir", path="/p", nbd="198.18.1.10")
