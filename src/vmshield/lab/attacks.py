"""Attack scenarios of the lab, each bounded in packets and time, run from a lab namespace.

Real tools where they exist (nmap, hping3, curl), crafted packets for the rest (vmshield.lab.craft).
Targets are lab VMs only: addresses come from the lab's state, never from the user.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshield.filter import sysnet
from vmshield.lab.lab import LabError, LabState

# Names the lab's URL database lists (see lab.lab_policy); `lab attack url` asks for them.
LAB_BLOCKED_HTTP = "malware.vmshield-lab.test"
LAB_BLOCKED_TLS = "phish.vmshield-lab.test"
LAB_IDS_MARKER = "vmshield-lab-ids-test"
LAB_IDS_SID = 9_000_001

SCENARIOS = (
    "portscan",
    "udpscan",
    "sweep",
    "synflood",
    "udpflood",
    "icmpflood",
    "land",
    "pingofdeath",
    "teardrop",
    "url",
    "ids",
)
FLOOD_PACKETS = 3000  # per SYN/ICMP flood, at ~2 000/s
TIME_LIMIT = 20.0  # seconds per tool run


@dataclass
class AttackResult:
    scenario: str
    source: str
    target: str
    commands: list[list[str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    returncodes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _commands(st: LabState, scenario: str, src_ns: str, src_addr: str, dst: str) -> list[list[str]]:
    craft = [sys.executable, "-m", "vmshield.lab.craft"]
    hp = ["hping3", "-q", "-c", str(FLOOD_PACKETS), "-i", "u500"]
    if scenario == "portscan":
        return [
            [
                "nmap",
                "-n",
                "-Pn",
                "-sS",
                "-p",
                "1-300",
                "--max-retries",
                "0",
                "--max-rate",
                "1500",
                "--host-timeout",
                "15s",
                dst,
            ]
        ]
    if scenario == "udpscan":
        return [
            [
                "nmap",
                "-n",
                "-Pn",
                "-sU",
                "-p",
                "1-200",
                "--max-retries",
                "0",
                "--max-rate",
                "1000",
                "--host-timeout",
                "15s",
                dst,
            ]
        ]
    if scenario == "sweep":
        # Echo requests to the lab's unused .64/26, routed through vm1 (see Lab._create_net).
        net = st.subnet.rsplit(".", 1)[0]
        return [
            [
                "nmap",
                "-n",
                "-sn",
                "--send-ip",
                "-PE",
                "--max-retries",
                "0",
                "--max-rate",
                "500",
                "--max-rtt-timeout",
                "200ms",
                "--host-timeout",
                "3s",
                f"{net}.64-127",
            ]
        ]
    if scenario == "synflood":
        return [[*hp, "-S", "-p", "80", dst]]
    if scenario == "udpflood":
        # hping3 cannot send fast enough for a bounded count: our own sender does.
        return [[*craft, "udpflood", "--to", dst, "--from-address", src_addr, "--count", "12000"]]
    if scenario == "icmpflood":
        return [[*hp, "--icmp", dst]]
    if scenario in ("land", "pingofdeath", "teardrop"):
        return [[*craft, scenario, "--to", dst, "--from-address", src_addr, "--lab", st.prefix]]
    if scenario == "url":
        return [
            [
                "curl",
                "-s",
                "-m",
                "5",
                "--resolve",
                f"{LAB_BLOCKED_HTTP}:80:{dst}",
                f"http://{LAB_BLOCKED_HTTP}/payload.exe",
            ],
            [
                "curl",
                "-sk",
                "-m",
                "5",
                "--resolve",
                f"{LAB_BLOCKED_TLS}:443:{dst}",
                f"https://{LAB_BLOCKED_TLS}/login",
            ],
        ]
    if scenario == "ids":
        return [["curl", "-s", "-m", "5", f"http://{dst}/search?q={LAB_IDS_MARKER}"]]
    raise LabError(f"unknown scenario {scenario!r} (one of: {', '.join(SCENARIOS)})")


def run_attack(
    st: LabState,
    scenario: str,
    source: str = "attacker",
    target: str = "vm1",
    wait_events: float = 1.5,
) -> AttackResult:
    src = st.host(source)
    dst = st.host(target)
    if src.name == dst.name:
        raise LabError("--from and --to must be different hosts")
    res = AttackResult(scenario, f"{src.name} ({src.address})", f"{dst.name} ({dst.address})")
    eve = Path(st.eve) if st.eve else None
    start_size = eve.stat().st_size if eve and eve.exists() else 0
    t0 = time.monotonic()
    for cmd in _commands(st, scenario, src.netns, src.address, dst.address):
        full = sysnet.in_ns(src.netns, *cmd)
        res.commands.append(cmd)
        try:
            proc = subprocess.run(
                full, capture_output=True, text=True, timeout=TIME_LIMIT, check=False
            )
            res.returncodes.append(proc.returncode)
            res.outputs.append((proc.stdout + proc.stderr)[-4000:])
        except subprocess.TimeoutExpired as exc:
            res.returncodes.append(-1)
            res.outputs.append(f"stopped after {TIME_LIMIT:.0f}s: {str(exc.stdout or '')[-2000:]}")
    res.seconds = round(time.monotonic() - t0, 3)
    if eve is not None:
        time.sleep(wait_events)  # the workers write events asynchronously
        res.events = read_events(eve, start_size, {src.address, dst.address})
    return res


def read_events(
    eve: Path, offset: int = 0, addresses: set[str] | None = None
) -> list[dict[str, Any]]:
    """Events written after `offset` bytes, optionally only those naming one of `addresses`."""
    out = []
    try:
        with open(eve, "rb") as f:
            f.seek(offset)
            for line in f:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if (
                    addresses is None
                    or obj.get("src_ip") in addresses
                    or obj.get("dest_ip") in addresses
                ):
                    out.append(obj)
    except FileNotFoundError:
        pass
    return out
