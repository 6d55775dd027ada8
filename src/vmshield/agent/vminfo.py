"""What the agent reports about its VM: identity (machine id, DMI UUID) and information."""

from __future__ import annotations

import os
import socket

from vmshield import __version__
from vmshield.transport.protocol import MAX_ADDRESSES, VmInfo


def _read(path: str, limit: int = 256) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit).strip()
    except OSError:
        return ""


def _os_name() -> str:
    for line in _read("/etc/os-release", 4096).splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return os.uname().sysname


def _addresses() -> list[str]:
    out: list[str] = []
    try:
        import psutil

        for name, addrs in psutil.net_if_addrs().items():
            if name == "lo":
                continue
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6) and not a.address.startswith(
                    "fe80"
                ):
                    out.append(a.address.split("%")[0])
    except Exception:
        pass
    return sorted(set(out))[:MAX_ADDRESSES]


def collect(machine_id: str = "", dmi_uuid: str = "", hostname: str = "") -> VmInfo:
    """Current VM information; explicit values override what the system says (lab VMs share a kernel)."""
    return VmInfo(
        machine_id=(machine_id or _read("/etc/machine-id"))[:256],
        dmi_uuid=(dmi_uuid or _read("/sys/class/dmi/id/product_uuid")).lower()[:256],
        hostname=(hostname or socket.gethostname())[:256],
        os=_os_name()[:256],
        kernel=os.uname().release[:256],
        addresses=_addresses(),
        agent_version=__version__,
    )
