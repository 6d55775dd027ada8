"""`vmshield lab`: namespaces, bridge, servers, status, down (idempotent, after a crash), and the
attack scenarios (bounded, each detected by the engine)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from filterlab_lib import cli, events, http, lab_up, leftovers, new_prefix, ns

from vmshield.lab.attacks import TIME_LIMIT, run_attack
from vmshield.lab.lab import Lab, state_path

pytestmark = [pytest.mark.root]


def test_up_status_down_through_the_cli(tmp_path: Path) -> None:
    os.environ["VMSHIELD_LAB_DIR"] = str(tmp_path)
    prefix = new_prefix()
    try:
        out = cli(
            "lab", "--prefix", prefix, "up", "--vms", "2", "--protect", "none", "--no-onaccess"
        )
        assert out.returncode == 0, out.stderr
        status = json.loads(cli("lab", "--prefix", prefix, "status", "--json").stdout)
        assert status["up"] and status["mode"] == "none"
        hosts = {h["name"]: h for h in status["hosts"]}
        assert set(hosts) == {"vm1", "vm2", "attacker"}
        assert all(h["netns_present"] for h in hosts.values())
        assert all(p["running"] for h in hosts.values() for p in h["processes"])
        assert all(h["address"].startswith("10.231.") for h in hosts.values())
        assert len(f"{prefix}-attacker") <= 32 and all(len(h["port"]) <= 15 for h in hosts.values())
        st = Lab(prefix).state
        assert st is not None
        rc, body = http(st, "vm1", "vm2")
        assert rc == 0 and "lab VM vm2" in body
        dig = ns(
            st,
            "attacker",
            "dig",
            "+short",
            "+time=3",
            "+tries=2",
            f"@{hosts['vm1']['address']}",
            "www.vm1.lab",
        )
        assert dig.stdout.strip() == hosts["vm1"]["address"]
        tls = ns(st, "vm2", "curl", "-sk", "-m", "3", f"https://{hosts['vm1']['address']}/")
        assert "lab VM vm1" in tls.stdout
        # A second lab side by side gets its own subnet and names.
        with lab_up(tmp_path, vms=1, protect="none") as other:
            assert other.subnet != st.subnet and other.bridge != st.bridge
            assert http(other, "attacker", "vm1")[0] == 0
            assert http(st, "vm1", "vm2")[0] == 0
        assert f"lab {prefix}: {st.subnet}" in cli("lab", "--prefix", prefix, "status").stdout
    finally:
        out = cli("lab", "--prefix", prefix, "down")
    assert out.returncode == 0
    assert leftovers(prefix) == []
    # Idempotent: a second down finds nothing and succeeds; status says down.
    assert cli("lab", "--prefix", prefix, "down").returncode == 0
    assert cli("lab", "--prefix", prefix, "status").returncode == 1


def test_down_removes_everything_after_a_crash(tmp_path: Path) -> None:
    os.environ["VMSHIELD_LAB_DIR"] = str(tmp_path)
    prefix = new_prefix()
    lab = Lab(prefix)
    try:
        st = lab.up(vms=2, protect="standard", onaccess=False)
        # A crash: the service is killed, its state file is lost; rules, set, namespaces, links
        # and the VMs' servers are still there.
        os.kill(st.service_pid, signal.SIGKILL)
        time.sleep(0.3)
        state_path(prefix).unlink()
        left = leftovers(prefix)
        assert any(x.startswith("netns") for x in left) and any(
            "tables: -N VMS-" in x for x in left
        )
        assert any(x.startswith("ipset") for x in left) and any(
            x.startswith("process") for x in left
        )
    finally:
        removed = Lab(prefix).down()
    assert removed
    assert leftovers(prefix) == []


def test_bad_input_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    os.environ["VMSHIELD_LAB_DIR"] = str(tmp_path)
    out = cli("lab", "--prefix", "this-is-far-too-long", "up", "--protect", "none")
    assert out.returncode == 2 and "bad lab prefix" in out.stderr
    out = cli("lab", "--prefix", "vmsGzz", "up", "--vms", "0", "--protect", "none")
    assert out.returncode == 2 and "--vms" in out.stderr
    assert cli("lab", "--prefix", "vmsGzz", "attack", "portscan").returncode == 2
    assert leftovers("vmsGzz") == []


# Each scenario: what the engine must report (attack name), in which mode.
SCENARIOS = [
    ("udpscan", "standard", "Scan.Generic.PortScan.UDP"),
    ("sweep", "standard", "Scan.Generic.HostSweep.ICMP"),
    ("udpflood", "standard", "DoS.Generic.UDPFlood"),
    ("icmpflood", "standard", "DoS.Generic.ICMPFlood"),
    ("land", "standard", "DoS.Generic.Land"),
    # In standard mode the kernel's defragmenter drops these before the queue; the filter's
    # fragment watcher reads the raw fragments from the ports so they are still reported.
    ("pingofdeath", "both", "DoS.Generic.PingOfDeath"),
    ("teardrop", "both", "DoS.Generic.Teardrop"),
]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["standard", "monitoring"])
def test_attack_scenarios_are_bounded_and_detected(tmp_path: Path, mode: str) -> None:
    # The attacker is "do not block" so that one lab serves every scenario.
    with lab_up(tmp_path, vms=1, protect=mode, exclude=["no_block attacker"]) as st:
        for scenario, where, name in SCENARIOS:
            if where not in (mode, "both"):
                continue
            t0 = time.monotonic()
            res = run_attack(st, scenario, "attacker", "vm1", wait_events=0)
            assert time.monotonic() - t0 < TIME_LIMIT + 5, scenario
            assert all(rc >= 0 for rc in res.returncodes), (scenario, res.outputs)
            deadline = time.monotonic() + 8
            names: set[str] = set()
            while time.monotonic() < deadline and name not in names:
                names = {e["attack"]["name"] for e in events(st) if e.get("event_type") == "attack"}
                time.sleep(0.1)
            assert name in names, (scenario, sorted(names))
