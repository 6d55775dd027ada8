"""VLAN-scoped blocking: an attack seen in 802.1Q VLAN 100 blocks its source in VLAN 100 only.

This kernel has neither 802.1Q sub-interfaces (CONFIG_VLAN_8021Q) nor VLAN-filtering bridges, so
the lab's attacker writes tagged frames itself (AF_PACKET, tag in the frame): the receiving veth
moves the tag into the packet's metadata exactly as for a guest's tagged frame on a tap port,
the plain bridge forwards it, NFQUEUE reports the VLAN id, and the kernel's drop matches it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from filterlab_lib import cli, http, lab_up, wait_events

from vmshield.filter import rules, sysnet

pytestmark = [pytest.mark.root, pytest.mark.slow]

# Runs inside the attacker's namespace: SYNs to `count` ports of the target, tagged with VLAN.
_SENDER = r"""
import socket, struct, sys
from vmshield.filter.inject import tcp_packet
src, dst, smac, dmac, vlan, first, count = sys.argv[1:8]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
head = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", ""))
head += struct.pack("!HHH", 0x8100, int(vlan), 0x0800)
for port in range(int(first), int(first) + int(count)):
    ip = tcp_packet(socket.inet_aton(src), socket.inet_aton(dst), 40000 + port % 1000, port,
                    1000, 0, 0x02, window=1024)
    s.send(head + ip)
"""


def _send_tagged(st, vlan: int, first: int, count: int) -> None:  # noqa: ANN001
    a, v = st.host("attacker"), st.host("vm1")
    cmd = ["ip", "netns", "exec", a.netns, sys.executable, "-c", _SENDER]
    cmd += [a.address, v.address, a.mac, v.mac, str(vlan), str(first), str(count)]
    subprocess.run(cmd, check=True, timeout=30, capture_output=True)


def _vlan_drops(st) -> int:  # noqa: ANN001
    out = sysnet.run(
        ["nft", "-j", "list", "chain", "bridge", rules.vlan_table(st.prefix), "forward"]
    )
    total = 0
    for item in json.loads(out)["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                total += expr["counter"]["packets"]
    return total


def test_attack_in_a_vlan_blocks_the_source_in_that_vlan_only(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard", block_seconds=120) as st:
        attacker = st.host("attacker").address
        assert _vlan_drops(st) == 0
        _send_tagged(st, 100, 1, 40)  # a SYN scan of 40 ports, in VLAN 100
        blocks = wait_events(
            st, lambda e: e.get("event_type") == "block" and e.get("src_ip") == attacker
        )
        assert blocks, "the tagged scan was not blocked"
        scope = blocks[0]["block"]["scope"]
        assert scope["vlan"] == 100 and scope["bridge"] == st.bridge
        alerts = wait_events(
            st, lambda e: e.get("event_type") == "attack" and e.get("src_ip") == attacker
        )
        assert alerts and alerts[0]["vlan"] == [100]  # the engine saw the tag too
        # The kernel holds (attacker, VLAN 100) with its timeout; nothing bridge-wide.
        entries = rules.blocked(st.prefix)
        assert [(e.address, e.vlan, e.scope) for e in entries] == [(attacker, 100, "vlan 100")]
        assert 0 < entries[0].timeout <= 120
        # Scope: the attacker's untagged traffic (another VLAN) still reaches the VMs ...
        rc, body = http(st, "attacker", "vm1", timeout=3)
        assert rc == 0 and "lab VM vm1" in body
        # ... while its VLAN-100 frames are dropped by the kernel before the queue.
        _send_tagged(st, 100, 2000, 10)
        assert _vlan_drops(st) >= 10
        # The same address in VLAN 200 is not blocked either.
        before = _vlan_drops(st)
        _send_tagged(st, 200, 3000, 5)
        assert _vlan_drops(st) == before
        listed = json.loads(cli("blocked", "--filter", st.prefix, "list", "--json").stdout)
        assert [(e["address"], e["scope"], e["vlan"]) for e in listed] == [
            (attacker, "vlan 100", 100)
        ]
        table = cli("blocked", "--filter", st.prefix, "list").stdout
        assert "vlan 100" in table
        # Manual removal by ADDRESS@VLAN; a bad VLAN is named.
        bad = cli("blocked", "--filter", st.prefix, "remove", f"{attacker}@5000")
        assert bad.returncode == 2 and "5000" in bad.stderr
        out = cli("blocked", "--filter", st.prefix, "remove", f"{attacker}@100")
        assert out.returncode == 0, out.stderr
        assert rules.blocked(st.prefix) == []
    assert rules.vlan_table(st.prefix) not in rules._vlan_tables()


def test_vlan_exclusion_applies_to_tagged_traffic_only_in_that_vlan(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard", exclude=["no_scan vlan 100"]) as st:
        attacker = st.host("attacker").address
        _send_tagged(st, 100, 1, 40)  # excluded VLAN: never inspected, never blocked
        _send_tagged(st, 200, 1, 40)  # the same scan in VLAN 200 is blocked there
        blocks = wait_events(
            st, lambda e: e.get("event_type") == "block" and e.get("src_ip") == attacker
        )
        assert [b["block"]["scope"].get("vlan") for b in blocks] == [200]
        assert [(e.address, e.vlan) for e in rules.blocked(st.prefix)] == [(attacker, 200)]
        scans = [
            e
            for e in wait_events(st, lambda e: e.get("event_type") == "attack")
            if e.get("src_ip") == attacker
        ]
        assert scans and all(e.get("vlan") == [200] for e in scans)
