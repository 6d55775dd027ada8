"""Monitoring mode (tc mirror + AF_PACKET ring): the same attacks give the same events, nothing is
blocked; and what happens to traffic when the SVM is killed (fail-open / fail-closed)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from filterlab_lib import cli, events, http, lab_up, ns, wait_events

from vmshield.filter import sysnet
from vmshield.filter.watchdog import _watchdog_pids as watchdog_pids
from vmshield.lab.attacks import LAB_BLOCKED_HTTP, LAB_BLOCKED_TLS, LAB_IDS_SID, run_attack

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_monitoring_reports_the_same_attacks_and_blocks_nothing(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="monitoring") as st:
        attacker = st.host("attacker").address
        vm1 = st.host("vm1").address
        # No inline rules and no block set: the mirror only copies.
        assert f"VMS-{st.prefix}" not in sysnet.ipt("-S")
        filters = subprocess.run(
            ["tc", "filter", "show", "dev", st.host("vm1").port, "ingress"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert "mirred" in filters and f"{st.prefix}-mir" in filters

        run_attack(st, "portscan", "attacker", "vm1", wait_events=0)
        scans = wait_events(
            st,
            lambda e: (
                e.get("event_type") == "attack"
                and e.get("src_ip") == attacker
                and e["attack"].get("name") == "Scan.Generic.PortScan.TCP"
            ),
        )
        assert scans
        # The blocked URL and the IDS rule: reported, but the real answers get through.
        rc, body = http(
            st,
            "attacker",
            "vm1",
            "/payload.exe",
            extra=("--resolve", f"{LAB_BLOCKED_HTTP}:80:{vm1}", "-H", f"Host: {LAB_BLOCKED_HTTP}"),
        )
        assert rc == 0 and "lab VM vm1" in body
        p = ns(
            st,
            "attacker",
            "curl",
            "-sk",
            "-m",
            "4",
            "--resolve",
            f"{LAB_BLOCKED_TLS}:443:{vm1}",
            f"https://{LAB_BLOCKED_TLS}/login",
        )
        assert p.returncode == 0 and "lab VM vm1" in p.stdout
        rc, body = http(st, "attacker", "vm1", "/search?q=vmshield-lab-ids-test")
        assert rc == 0 and "lab VM vm1" in body
        urls = wait_events(st, lambda e: e.get("event_type") == "url", count=2)
        assert {u["url"].get("hostname") for u in urls} >= {LAB_BLOCKED_HTTP, LAB_BLOCKED_TLS}
        assert all(u["url"]["action"] == "allowed" for u in urls)
        alerts = wait_events(
            st,
            lambda e: (
                e.get("event_type") == "alert" and e["alert"].get("signature_id") == LAB_IDS_SID
            ),
        )
        assert alerts and alerts[0]["alert"]["action"] == "allowed"
        run_attack(st, "synflood", "attacker", "vm2", wait_events=0)
        floods = wait_events(
            st,
            lambda e: (
                e.get("event_type") == "attack"
                and e["attack"].get("name") == "DoS.Generic.SYNFlood"
            ),
        )
        assert floods and floods[0]["src_ip"] == attacker
        assert not [e for e in events(st) if e.get("event_type") == "block"]
        # The scanner was never blocked.
        assert http(st, "attacker", "vm2")[0] == 0
        started = [
            e
            for e in events(st)
            if e.get("event_type") == "filter" and e["filter"]["state"] == "started"
        ]
        assert started and started[0]["filter"]["mode"] == "monitoring"


def _state(e: dict) -> str | None:  # type: ignore[type-arg]
    return e["filter"].get("state") if e.get("event_type") == "filter" else None


def _kill_service(st) -> None:  # noqa: ANN001
    """SIGKILL the SVM's network service and wait until it and its workers are gone."""
    os.kill(st.service_pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(st.service_pid, 0)  # the lab started it from this process
    needle = f"vmshield.filter.service --mode {st.protect} --bridge {st.bridge} "
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if needle in cmd:
                    alive.append(d.name)
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"workers of the killed service still run: {alive}")


def test_killed_svm_fails_open_by_default_and_reports_the_outage_at_restart(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard") as st:
        assert http(st, "vm1", "vm2")[0] == 0
        cmdline = Path(f"/proc/{st.service_pid}/cmdline").read_bytes().split(b"\0")[:-1]
        _kill_service(st)
        # The watchdog (its own process) reports the bypass at once, not at the next start.
        active = wait_events(st, lambda e: _state(e) == "bypass_active", timeout=10)
        assert active, "no bypass_active event after the SVM was killed"
        assert active[0]["filter"]["traffic"] == "uninspected"
        assert active[0]["filter"]["reason"] == "service process gone"
        assert active[0]["filter"]["service_pid"] == st.service_pid
        status = json.loads(cli("lab", "--prefix", st.prefix, "status", "--json").stdout)
        assert not status["service"]["running"]
        assert status["service"]["watchdog_pids"] == watchdog_pids(st.prefix) != []
        # The rules stay, nobody listens on the queues: --queue-bypass lets traffic through.
        assert f"VMS-{st.prefix}" in sysnet.ipt("-S")
        rc, body = http(st, "vm1", "vm2", timeout=3)
        assert rc == 0 and "lab VM vm2" in body
        # The SVM comes back: it reports that traffic went uninspected while it was down.
        ready = Path(st.service_dir) / "ready"
        ready.unlink()
        proc = subprocess.Popen(
            [c.decode() for c in cmdline],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            outage = wait_events(
                st, lambda e: e.get("event_type") == "filter" and e["filter"]["state"] == "outage"
            )
            assert outage and outage[0]["filter"]["traffic"] == "uninspected"
            assert outage[0]["filter"]["seconds"] > 0
            ended = wait_events(st, lambda e: _state(e) == "bypass_ended", timeout=10)
            assert ended and ended[0]["filter"]["seconds"] > 0
            assert http(st, "vm1", "vm2")[0] == 0
            # One watchdog again: the old one went, the new service started its own.
            assert len(watchdog_pids(st.prefix)) == 1
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        # A clean stop is no outage: the service ends its watchdog first.
        assert len([e for e in events(st) if _state(e) == "bypass_active"]) == 1
        assert not watchdog_pids(st.prefix)


def test_killed_svm_fails_closed_when_configured(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="standard", fail_closed=True) as st:
        assert http(st, "vm1", "vm2")[0] == 0
        started = [e for e in events(st) if e.get("event_type") == "filter"]
        assert started[0]["filter"]["fail_closed"] is True
        _kill_service(st)
        blocked = wait_events(st, lambda e: _state(e) == "traffic_blocked", timeout=10)
        assert blocked and blocked[0]["filter"]["traffic"] == "blocked"
        assert not [e for e in events(st) if _state(e) == "bypass_active"]
        assert http(st, "vm1", "vm2", timeout=2)[0] != 0
        assert ns(st, "vm1", "ping", "-c", "1", "-W", "1", st.host("vm2").address).returncode != 0


def test_killed_monitoring_svm_is_reported_at_once(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="monitoring") as st:
        _kill_service(st)
        active = wait_events(st, lambda e: _state(e) == "bypass_active", timeout=10)
        assert active and active[0]["filter"]["mode"] == "monitoring"
        assert active[0]["filter"]["traffic"] == "uninspected"
        rc, body = http(st, "vm1", "vm2", timeout=3)  # the mirror never carried the traffic
        assert rc == 0 and "lab VM vm2" in body
        assert len(watchdog_pids(st.prefix)) == 1
    assert not watchdog_pids(st.prefix)


def test_monitoring_stops_reading_a_bulk_flow_the_engine_is_done_with(tmp_path: Path) -> None:
    with lab_up(tmp_path, vms=2, protect="monitoring") as st:
        started = wait_events(st, lambda e: e.get("filter", {}).get("state") == "started")
        assert started and started[0]["filter"]["kernel_bypass"] is True
        vm2 = st.host("vm2")
        server = subprocess.Popen(
            sysnet.in_ns(vm2.netns, "iperf3", "-s", "-1", "-p", "5212"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            rx0 = int(ns(st, "vm2", "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)
            p = ns(st, "vm1", "iperf3", "-c", vm2.address, "-p", "5212", "-t", "2", timeout=30)
            assert p.returncode == 0, p.stderr
            rx = int(ns(st, "vm2", "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)
        finally:
            server.kill()
            server.wait()
        # A port scan afterwards is still seen: new flows are read from their first packet.
        run_attack(st, "portscan", "attacker", "vm1", wait_events=0)
        assert wait_events(st, lambda e: e.get("event_type") == "attack")
    stats = [
        e["filter"]
        for e in events(st)
        if e.get("filter", {}).get("state") == "worker_stats"
        and "frames" in e["filter"]["verdicts"]
    ]
    assert stats, "mirror workers reported no counters at stop"
    frames = sum(s["verdicts"]["frames"] for s in stats)
    added = sum(s["verdicts"].get("bypass_flows_added", 0) for s in stats)
    # Every frame of both directions is mirrored; without the kernel filter the workers would
    # read at least as many frames as vm2 received. With it, the bulk flow stops after its
    # first megabyte (a few dozen frames), and the scan's few thousand probes are read.
    assert added >= 2 and (rx - rx0) > 2_000 and frames < (rx - rx0) / 2, (frames, rx - rx0)
