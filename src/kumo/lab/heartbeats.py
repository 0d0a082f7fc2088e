"""Every guest's heartbeat as each host's serial console log shows it, read every 0.25 s
from the root namespace (``STATE_DIR/<host>/log-libvirt/qemu/<vm>-serial.log``, the file the
host's QEMU writes): the guest's own account of where and in which boot it runs. It needs no
API, etcd or agent (a chaos run kills those), and it sees a VM on every host at once: two
boots of one VM printing side by side is a double run that libvirt's lists might miss.

Each line ``KUMO-GUEST boot=<id> n=<counter> host=<name>`` is kept with the time it was first
seen here (the guest prints one a second)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kumo.chaos import Beat
from kumo.lab.hypervisor_host import host_dir
from kumo.lab.plan import LabPlan

PERIOD_S = 0.25
LINE = re.compile(rb"KUMO-GUEST boot=(\S+) n=(\d+)")


def serial_log(host: str, vm: str) -> Path:
    return host_dir(host) / "log-libvirt" / "qemu" / f"{vm}-serial.log"


@dataclass
class _File:
    inode: int = -1
    offset: int = 0
    partial: bytes = b""


class HeartbeatTail:
    """Start with :meth:`start`, end with :meth:`stop`; ``beats`` grows meanwhile. What a
    file held before :meth:`start` (an earlier VM of the same name) is skipped."""

    def __init__(
        self, plan: LabPlan, vms: list[str], log_path: Callable[[str, str], Path] = serial_log
    ) -> None:
        self.log_path = log_path  # (host, vm) -> its serial console log, seen from here
        self.hosts = [h.name for h in plan.hosts]
        self.vms = list(vms)
        self.beats: list[Beat] = []
        self._files: dict[tuple[str, str], _File] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HeartbeatTail:
        for host in self.hosts:
            for vm in self.vms:
                f = _File()
                try:
                    st = self.log_path(host, vm).stat()
                    f.inode, f.offset = st.st_ino, st.st_size
                except FileNotFoundError:
                    pass
                self._files[(host, vm)] = f
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            # one time for the whole pass: lines read in one pass are seen at one instant, so
            # a migration's last line on the source and first on the target, read in one
            # pass, never look interleaved (kumo.chaos.heartbeat_doubles)
            now = time.time()
            for (host, vm), f in self._files.items():
                self._read(host, vm, f, now)
            self._stop.wait(PERIOD_S)

    def _read(self, host: str, vm: str, f: _File, now: float) -> None:
        path = self.log_path(host, vm)
        try:
            with path.open("rb") as fh:
                st = path.stat()
                if st.st_ino != f.inode or st.st_size < f.offset:  # a new or truncated file
                    f.inode, f.offset, f.partial = st.st_ino, 0, b""
                fh.seek(f.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        if not data:
            return
        f.offset += len(data)
        lines = (f.partial + data).split(b"\n")
        f.partial = lines.pop()
        for line in lines:
            m = LINE.search(line)
            if m:
                boot = m.group(1).decode(errors="replace")
                self.beats.append(Beat(now, host, vm, boot, int(m.group(2))))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def heard_since(self, vm: str, t: float) -> bool:
        return any(b.vm == vm and b.seen_at > t for b in reversed(self.beats))
