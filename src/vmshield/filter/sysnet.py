"""Thin wrappers over the kernel's own tools (ip, iptables, ipset, tc) used by the lab and the filter.

Every call names what failed: a `NetCommandError` carries the command line and the tool's stderr.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence


class NetCommandError(RuntimeError):
    def __init__(self, cmd: Sequence[str], rc: int, stderr: str) -> None:
        self.cmd = list(cmd)
        self.rc = rc
        self.stderr = stderr.strip()
        super().__init__(f"{' '.join(cmd)} failed (exit {rc}): {self.stderr}")


def run(
    cmd: Sequence[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None
) -> str:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if check and proc.returncode != 0:
        raise NetCommandError(cmd, proc.returncode, proc.stderr or proc.stdout)
    return proc.stdout


def try_run(cmd: Sequence[str], timeout: float = 30.0) -> bool:
    """Run a cleanup command; a missing object is not an error."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def iptables_cmd(v6: bool = False) -> str:
    tool = "ip6tables" if v6 else "iptables"
    return shutil.which(tool) or f"/usr/sbin/{tool}"


def ipt(*args: str, check: bool = True, v6: bool = False) -> str:
    # -w: wait for the xtables lock; several labs and the service edit rules concurrently.
    return run([iptables_cmd(v6), "-w", "10", *args], check=check)


def ipt_ok(*args: str, v6: bool = False) -> bool:
    return try_run([iptables_cmd(v6), "-w", "10", *args])


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_names() -> list[str]:
    out = run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def set_sysctl(key: str, value: str) -> str | None:
    """Set a sysctl, returning the previous value (None when the key does not exist)."""
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path) as f:
            old = f.read().strip()
        if old != value:
            with open(path, "w") as f:
                f.write(value)
        return old
    except OSError:
        return None


# filter-vlan-tagged: without it br_netfilter skips 802.1Q-tagged frames, and a guest's tagged
# traffic would cross the bridge uninspected.
BR_NF_KEYS = (
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-filter-vlan-tagged",
)


def ensure_br_netfilter() -> dict[str, str]:
    """br_netfilter makes bridged frames traverse iptables; built in or a module.

    Returns the previous values of the sysctls it changed (for the caller to restore)."""
    modprobe = shutil.which("modprobe")
    if modprobe:
        try_run([modprobe, "br_netfilter"])
    changed: dict[str, str] = {}
    for key in BR_NF_KEYS:
        old = set_sysctl(key, "1")
        if old is None and key.endswith("-iptables"):
            raise RuntimeError(
                "br_netfilter is not available: /proc/sys/net/bridge/bridge-nf-call-iptables is "
                "missing (load the br_netfilter module)"
            )
        if old is not None and old != "1":
            changed[key] = old
    return changed
