"""Standard (inline) mode on a real bridge: NFQUEUE, ipset blocking, active responses, bypass."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from filterlab_lib import cli, events, http, lab_up, ns, wait_events

from vmshield.filter import rules, sysnet
from vmshield.lab.attacks import LAB_BLOCKED_HTTP, LAB_BLOCKED_TLS, LAB_IDS_SID, run_attack

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _attack_events(st, kind, src):  # noqa: ANN001, ANN202
    return lambda e: (
        e.get("event_type") == "attack"
        and e.get("src_ip") == src
        and e["attack"].get("name") == kind
    )


def test_portscan_blocks_the_attacker_in_the_kernel_and_vm_traffic_continues(
    tmp_path: Path,
) -> None:
    with lab_up(tmp_path, vms=2, protect="standard", block_seconds=120) as st:
        attacker = st.host("attacker").address
        assert http(st, "attacker", "vm1")[0] == 0  # reachable before the attack
        run_attack(st, "portscan", "attacker", "vm1", wait_events=0)
        assert wait_events(st, _attack_events(st, "Scan.Generic.PortScan.TCP", attacker))
        blocks = wait_events(
            st, lambda e: e.get("event_type") == "block" and e.get("src_ip") == attacker
        )
        assert blocks and blocks[0]["block"]["action"] == "block_source"
        assert blocks[0]["block"]["scope"]["bridge"] == st.bridge
        # The kernel holds the block with its timeout.
        entries = {e.address: e.timeout for e in rules.blocked(st.prefix)}
        assert attacker in entries and 0 < entries[attacker] <= 120
        listed = json.loads(cli("blocked", "--filter", st.prefix, "list", "--json").stdout)
        assert [e["address"] for e in listed] == [attacker]
        # New connections from the attacker fail; vm1 <-> vm2 keeps working.
        assert http(st, "attacker", "vm1", timeout=2)[0] != 0
        assert http(st, "attacker", "vm2", timeout=2)[0] != 0
        assert (
            ns(st, "attacker", "ping", "-c", "1", "-W", "1", st.host("vm2").address).returncode != 0
        )
        rc, body = http(st, "vm1", "vm2")
        assert rc == 0 and "lab VM vm2" in body
        rc, body = http(st, "vm2", "vm1")
        assert rc == 0 and "lab VM vm1" in body
        # Manual unblock through the CLI restores the attacker's access.
        out = cli("blocked", "--filter", st.prefix, "remove", attacker)
        assert out.returncode == 0, out.stderr
        assert rules.blocked(st.prefix) == []
        # (A ping, not a new TCP connection: the scan detector may still count the scanner's
        # fresh SYNs towards the scan it just saw and block it again, which is right.)
        ping = ns(st, "attacker", "ping", "-c", "1", "-W", "2", st.host("vm1").address)
        assert ping.returncode == 0, ping.stdout
        assert cli("blocked", "--filter", st.prefix, "remove", attacker).returncode == 1
        # IPv6 goes through the same chain (ip6tables) and its own block set.
        assert f"-j VMS-{st.prefix}" in sysnet.ipt("-S", "FORWARD", v6=True)
        rules.block(st.prefix, "fd00:e7::66", 30)
        assert [e.address for e in rules.blocked(st.prefix)] == ["fd00:e7::66"]
        assert rules.unblock(st.prefix, "fd00:e7::66") and rules.blocked(st.prefix) == []


def test_synflood_is_blocked_and_legitimate_http_keeps_working(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard", block_seconds=60) as st:
        attacker = st.host("attacker").address
        flood = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                st.host("attacker").netns,
                "hping3",
                "-q",
                "-S",
                "-p",
                "80",
                "-c",
                "1500",
                "-i",
                "u500",
                st.host("vm1").address,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ok = [http(st, "vm2", "vm1", timeout=3)[0] == 0 for _ in range(5)]
        finally:
            flood.wait(timeout=30)
        assert all(ok), "legitimate HTTP failed during the flood"
        assert wait_events(st, _attack_events(st, "DoS.Generic.SYNFlood", attacker))
        assert attacker in {e.address for e in rules.blocked(st.prefix)}
        assert http(st, "attacker", "vm1", timeout=2)[0] != 0
        rc, body = http(st, "vm2", "vm1")
        assert rc == 0 and "lab VM vm1" in body


def test_blocked_url_gets_the_block_page_and_blocked_tls_is_reset(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard") as st:
        vm2 = st.host("vm2").address
        rc, body = http(
            st,
            "vm1",
            "vm2",
            "/payload.exe",
            extra=("--resolve", f"{LAB_BLOCKED_HTTP}:80:{vm2}", "-H", f"Host: {LAB_BLOCKED_HTTP}"),
        )
        p = ns(
            st,
            "vm1",
            "curl",
            "-s",
            "-m",
            "4",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--resolve",
            f"{LAB_BLOCKED_HTTP}:80:{vm2}",
            f"http://{LAB_BLOCKED_HTTP}/payload.exe",
        )
        assert p.stdout == "403"
        assert rc == 0 and "Access blocked" in body and LAB_BLOCKED_HTTP in body
        assert "lab VM vm2" not in body  # the server's answer never reached the client
        # TLS with a blocked SNI: the connection is reset, not timed out.
        p = ns(
            st,
            "vm1",
            "curl",
            "-sk",
            "-m",
            "4",
            "--resolve",
            f"{LAB_BLOCKED_TLS}:443:{vm2}",
            f"https://{LAB_BLOCKED_TLS}/login",
        )
        assert p.returncode in (35, 56), (p.returncode, p.stderr)  # SSL connect error / recv reset
        # Other names on the same server still work, over HTTP and TLS.
        assert "lab VM vm2" in http(st, "vm1", "vm2", "/fine")[1]
        p = ns(
            st,
            "vm1",
            "curl",
            "-sk",
            "-m",
            "4",
            "--resolve",
            f"ok.vmshield-lab.test:443:{vm2}",
            "https://ok.vmshield-lab.test/",
        )
        assert p.returncode == 0 and "lab VM vm2" in p.stdout
        urls = wait_events(st, lambda e: e.get("event_type") == "url", count=2)
        assert len(urls) >= 2


def test_ids_rule_with_drop_drops(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard") as st:
        rc, _ = http(st, "vm1", "vm2", "/search?q=vmshield-lab-ids-test", timeout=2)
        assert rc == 28  # the request was dropped: curl timed out
        alerts = wait_events(
            st,
            lambda e: (
                e.get("event_type") == "alert" and e["alert"].get("signature_id") == LAB_IDS_SID
            ),
        )
        assert alerts and alerts[0]["alert"]["action"] == "blocked"
        assert "lab VM vm2" in http(st, "vm1", "vm2", "/search?q=harmless")[1]


def test_ids_drop_with_block_minutes_blocks_the_source(tmp_path: Path) -> None:
    """`ids.block-minutes` (the center's IDS action terminate_and_block): the drop rule's
    packet also puts its source into the kernel's block set, as an attack does."""
    engine = tmp_path / "engine.toml"
    engine.write_text("[ids]\nblock-minutes = 2\n")
    service = tmp_path / "service.toml"
    service.write_text(f'engine_config = "{engine}"\n')
    prefix = "ib" + secrets.token_hex(2)
    with lab_up(tmp_path, prefix=prefix, vms=2, protect="standard", config=str(service)) as st:
        src = st.host("vm1").address
        rc, _ = http(st, "vm1", "vm2", "/search?q=vmshield-lab-ids-test", timeout=2)
        assert rc == 28  # dropped
        blocks = wait_events(st, lambda e: e.get("event_type") == "block" and e["src_ip"] == src)
        assert blocks and blocks[0]["block"]["cause_types"] == ["alert"]
        assert blocks[0]["block"]["seconds"] == 120
        assert src in {e.address for e in rules.blocked(st.prefix)}


def test_excluded_address_is_detected_but_not_blocked(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=1, protect="standard", exclude=["no_block attacker"]) as st:
        attacker = st.host("attacker").address
        run_attack(st, "portscan", "attacker", "vm1", wait_events=0)
        hits = wait_events(st, _attack_events(st, "Scan.Generic.PortScan.TCP", attacker))
        assert hits and hits[0].get("exclusion") == "no_block"
        assert rules.blocked(st.prefix) == []
        assert not [e for e in events(st) if e.get("event_type") == "block"]
        assert http(st, "attacker", "vm1")[0] == 0


def test_no_scan_exclusion_is_never_queued(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard", exclude=["no_scan vm2"]) as st:
        # vm2's traffic is accepted by the kernel before the queue: the IDS rule never sees it.
        rc, body = http(st, "vm1", "vm2", "/search?q=vmshield-lab-ids-test")
        assert rc == 0 and "lab VM vm2" in body
        assert not [e for e in events(st) if e.get("event_type") in ("alert", "http")]


def test_clean_bulk_flow_is_bypassed_with_a_conntrack_mark(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard") as st:
        # Bulk both ways (2 MB up, 20 MB down): past the engine's inspection depth in each
        # direction there is nothing more to inspect, and the kernel stops queueing the flow.
        upload = tmp_path / "upload.bin"
        upload.write_bytes(b"u" * 2_000_000)
        url = f"http://{st.host('vm2').address}/bytes/20000000"
        fmt = "%{size_upload} %{size_download}"
        p = ns(
            st,
            "vm1",
            "curl",
            "-s",
            "-m",
            "20",
            "-o",
            "/dev/null",
            "-w",
            fmt,
            "--data-binary",
            f"@{upload}",
            url,
        )
        assert p.stdout == "2000000 20000000"
        ct = subprocess.run(
            ["conntrack", "-L", "-p", "tcp", "-s", st.host("vm1").address, "--dport", "80"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        marks = [int(x.split("=")[1]) for x in ct.split() if x.startswith("mark=")]
        assert marks and all(m & rules.BYPASS_MARK for m in marks), ct
        # And the kernel really accepted most of it unqueued (our chain's counters).
        chain = subprocess.run(
            ["iptables", "-L", f"VMS-{st.prefix}", "-v", "-x", "-n"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        bypassed = queued = 0
        for line in chain.splitlines():
            f = line.split()
            if "connmark" in line and f[2] == "ACCEPT":
                bypassed = int(f[1])
            elif f and f[-1].startswith("0.0.0.0/0") and f[2].endswith("-Q"):
                queued = int(f[1])
        assert bypassed > 10_000_000 and queued < bypassed, chain


def _queued(queues: list[int]) -> int:
    """Packets the kernel has handed to these queues so far (each gets the next id)."""
    total = 0
    for line in Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and int(f[0]) in queues:
            total += int(f[7])
    return total


def test_bulk_tcp_flow_stops_being_queued_after_its_first_packets(tmp_path: Path) -> None:
    from vmshield.filter.service import ProtectionConfig

    with lab_up(tmp_path, vms=2, protect="standard") as st:
        queues = ProtectionConfig(name=st.prefix, bridge=st.bridge, ports=[]).queues
        vm2 = st.host("vm2")
        server = subprocess.Popen(
            [*sysnet.in_ns(vm2.netns, "iperf3", "-s", "-1", "-p", "5211")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            rx = int(ns(st, "vm2", "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)
            q0 = _queued(queues)
            client = subprocess.Popen(
                sysnet.in_ns(
                    st.host("vm1").netns, "iperf3", "-c", vm2.address, "-p", "5211", "-t", "3"
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            q_mid = _queued(queues)
            time.sleep(1.5)
            q_late = _queued(queues)
            assert client.wait(timeout=20) == 0
        finally:
            server.kill()
            server.wait()
        rx = int(ns(st, "vm2", "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout) - rx
        # Once bypassed, none of the flow's packets reach the queue: in the middle of the
        # transfer the queues stand still (iperf3's idle control connection sends nothing).
        assert q_late - q_mid <= 3, (q0, q_mid, q_late)
        # The whole run: a few dozen packets queued (the handshakes, the first megabyte, the
        # results on the control connection) out of thousands received.
        assert rx > 2_000 and _queued(queues) - q0 < 300, (rx, _queued(queues) - q0)
        ct = subprocess.run(
            ["conntrack", "-L", "-p", "tcp", "-d", vm2.address, "--dport", "5211"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        marks = [int(x.split("=")[1]) for x in ct.split() if x.startswith("mark=")]
        assert any(m & rules.BYPASS_MARK for m in marks), ct  # the data connection
