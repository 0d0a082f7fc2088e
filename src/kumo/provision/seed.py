"""cloud-init NoCloud seeds: an ISO 9660 image labelled ``cidata`` holding ``meta-data``
and ``user-data`` (and optionally ``network-config``), as cloud-init's NoCloud datasource
reads it. Built with pycdlib, no external tools."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib

SEED_LABEL = "cidata"


def write_nocloud_iso(
    path: Path,
    *,
    meta_data: str,
    user_data: str,
    network_config: str | None = None,
) -> None:
    """Write a NoCloud seed ISO to ``path`` (Joliet + Rock Ridge, so names stay lowercase)."""
    files = {"meta-data": meta_data, "user-data": user_data}
    if network_config is not None:
        files["network-config"] = network_config
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    for name, text in files.items():
        data = text.encode()
        iso_name = "/" + name.upper().replace("-", "_") + ".;1"
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            iso_name,
            rr_name=name,
            joliet_path="/" + name,
        )
    tmp = path.with_name(path.name + ".tmp")
    iso.write(str(tmp))
    iso.close()
    tmp.replace(path)
