"""`vmshield svm --network-mode`: the SVM process also runs the network protection of its host's
bridge (a lab made by the test: namespaces, a bridge, veth ports; the filter's own service is not
started by the lab), forwards its events to the center it is enrolled with, and stops it,
leaving nothing behind."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "filter"))

from filterlab_lib import http, lab_up  # noqa: E402
from onaccess_lib import Harness  # noqa: E402
from test_onaccess_center import Center, _until  # noqa: E402

from vmshield.engines.net.urls import THREAT_CATEGORIES, build_database  # noqa: E402
from vmshield.lab.attacks import run_attack  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


def _enrolled_svm_args(harness: Any, st: Any, center_url: str, token: str) -> list[str]:
    """An SVM enrolled with the center, protecting the lab's bridge in standard mode."""
    return [
        "--enroll",
        center_url,
        token,
        "--network-mode",
        "standard",
        "--bridge",
        st.bridge,
        "--ports",
        ",".join(h.port for h in st.hosts),
        "--network-name",
        st.prefix,
        "--data-dir",
        str(harness.root / "svm-data"),
    ]


def test_svm_runs_network_protection_of_the_bridge(tmp_path: Path, harness: Harness) -> None:
    with lab_up(tmp_path / "lab", vms=2, protect="none", onaccess=False) as st:
        attacker = st.host("attacker").address
        assert http(st, "attacker", "vm1")[0] == 0
        center = Center(harness)
        center.start()
        inv = harness.root / "inventory.toml"
        inv.write_text('[[host]]\nname = "testhost"\n')
        with center.api() as api:
            api.post("/api/v1/connections", json={"name": "lab", "kind": "static", "url": str(inv)})
            hosts = _until(
                lambda: {x["name"]: x["node_id"] for x in api.get("/api/v1/hosts").json()},
                60,
                "the inventory",
            )
            r = api.post("/api/v1/deployments", json={"host_node_id": hosts["testhost"]})
            token = r.json()["enrolment_token"]
        harness.start_svm(extra_args=_enrolled_svm_args(harness, st, center.url, token))
        run_attack(st, "portscan", "attacker", "vm1", wait_events=0)
        deadline = time.monotonic() + 15
        net_eve = harness.root / "eve-network.json"  # enrolled: its own file, forwarded

        def net_events() -> list[dict]:  # type: ignore[type-arg]
            if not net_eve.exists():
                return []
            return [json.loads(x) for x in net_eve.read_text().splitlines() if x.strip()]

        blocks: list[dict] = []  # type: ignore[type-arg]
        while not blocks and time.monotonic() < deadline:
            blocks = [
                e
                for e in net_events()
                if e.get("event_type") == "block" and e.get("src_ip") == attacker
            ]
            time.sleep(0.2)
        assert blocks, json.dumps(net_events()[-5:])
        assert blocks[0]["host"] == "testhost"
        with center.api() as api:
            got = _until(
                lambda: api.get("/api/v1/events", params={"type": "block"}).json()["events"],
                30,
                "the network event in the center",
            )
            assert got[0]["event"]["src_ip"] == attacker
        # Blocked in the kernel; the VMs keep talking to each other.
        assert http(st, "attacker", "vm1", timeout=2)[0] != 0
        rc, body = http(st, "vm1", "vm2")
        assert rc == 0 and "lab VM vm2" in body
        assert harness.svm is not None
        harness.svm.stop()
        assert harness.svm.popen.returncode == 0, harness.svm.tail()
        center.stop()
        # Stopped with the SVM: lab_up checks that no rule, set or chain of it is left.


def test_svm_follows_the_centers_network_policy_without_restart(
    tmp_path: Path, harness: Harness
) -> None:
    """The network policy assigned in the center drives the running SVM's engine: attack
    detection off, then on (and gambling sites blocked), then a VM excluded; each change applied
    live and reported."""
    with lab_up(tmp_path / "lab", vms=2, protect="none", onaccess=False) as st:
        attacker = st.host("attacker").address
        vm_addr = {h: st.host(h).address for h in ("vm1", "vm2")}
        center = Center(harness)
        center.start()
        inv = harness.root / "inventory.toml"
        inv.write_text(
            '[[host]]\nname = "testhost"\n\n'
            + "".join(
                f'[[vm]]\nname = "{vm}"\nhost = "testhost"\nip_addresses = ["{a}"]\n\n'
                for vm, a in vm_addr.items()
            )
        )
        with center.api() as api:
            api.post("/api/v1/connections", json={"name": "lab", "kind": "static", "url": str(inv)})
            _until(lambda: len(api.get("/api/v1/vms").json()) >= 2, 60, "the inventory")
            hosts = {x["name"]: x["node_id"] for x in api.get("/api/v1/hosts").json()}
            # Attack detection off, and web attacks left out of the IDS categories.
            cats = ["exploit", "malware", "scan", "dos", "policy", "trojan", "botnet", "phishing"]
            off = {"attack_detection": False, "block_minutes": 1, "ids_categories": cats}
            r = api.post("/api/v1/profiles/network", json={"name": "lab-net", "settings": off})
            assert r.status_code == 201, r.text
            policy_id = r.json()["id"]
            r = api.put(
                f"/api/v1/inventory/nodes/{hosts['testhost']}/assignment/network",
                json={"mode": "profile", "profile_id": policy_id},
            )
            assert r.status_code == 200, r.text
            r = api.post("/api/v1/deployments", json={"host_node_id": hosts["testhost"]})
            token = r.json()["enrolment_token"]
        rules = harness.root / "local.rules"
        rules.write_text(
            'alert http any any -> any any (msg:"hs probe"; http.uri; content:"/hs-probe"; '
            "classtype:web-application-attack; sid:9100001; rev:1;)\n"
        )
        gambling = harness.root / "gambling-domains"  # a category list, as UT1's
        gambling.write_text("casino.vmshield-lab.test\n")
        url_db = harness.root / "urls.db"
        build_database([], url_db, lists=[("gambling", gambling)])
        net_toml = harness.root / "network.toml"
        net_toml.write_text(f'rules = ["{rules}"]\nurl_db = ["{url_db}"]\n')
        svm = harness.start_svm(
            extra_args=[
                *_enrolled_svm_args(harness, st, center.url, token),
                "--network-config",
                str(net_toml),
            ]
        )
        net_eve = harness.root / "eve-network.json"

        def policies() -> list[dict]:  # type: ignore[type-arg]
            return [
                e["svm"]
                for e in harness.events()
                if e.get("event_type") == "svm" and e["svm"].get("event", "").startswith("network")
            ]

        def net_events(kind: str) -> list[dict]:  # type: ignore[type-arg]
            if not net_eve.exists():
                return []
            evs = [json.loads(x) for x in net_eve.read_text().splitlines() if x.strip()]
            return [e for e in evs if e.get("event_type") == kind]

        first = _until(policies, 60, "the center's network policy applied")[0]
        assert first["event"] == "network_policy", first
        assert first["policy"]["id"] == policy_id and first["policy"]["revision"] == 1
        assert first["applied"]["attack_detection"] is False
        assert sorted(first["vms"]) == ["vm1", "vm2"] and first["not_applied"] == []
        assert first["ids"]["categories_left_out"] == ["web-attack"]
        assert first["ids"]["rules_left_out"] == 1
        assert net_events("filter")[-1]["filter"]["state"] == "reloaded"

        def probe_alerts() -> list[dict]:  # type: ignore[type-arg]
            return [e for e in net_events("alert") if e["alert"]["signature_id"] == 9100001]

        http(st, "vm2", "vm1", path="/hs-probe")
        time.sleep(1.0)
        assert probe_alerts() == []
        # Gambling is neither blocked nor allowed by the policy: the visit is reported, it works.
        casino = ("-H", "Host: casino.vmshield-lab.test")
        rc, body = http(st, "vm2", "vm1", path="/", extra=casino)
        assert rc == 0 and "Access blocked" not in body, body
        urls = _until(lambda: net_events("url"), 15, "the gambling visit reported")
        assert [(u["url"]["action"], u["url"]["categories"]) for u in urls] == [
            ("allowed", ["gambling"])
        ]
        # Detection off: a port scan goes unnoticed and the attacker keeps its access.
        run_attack(st, "portscan", "attacker", "vm1", wait_events=1.0)
        assert not [e for e in net_events("attack") if e.get("src_ip") == attacker]
        assert http(st, "attacker", "vm1")[0] == 0

        # The operator turns detection on: the running SVM follows (same process).
        with center.api() as api:
            on = {
                "attack_detection": True,
                "block_minutes": 1,
                "url_block": [*THREAT_CATEGORIES, "gambling"],
            }
            r = api.put(
                f"/api/v1/profiles/network/{policy_id}",
                json={"name": "lab-net", "settings": on},
            )
            assert r.status_code == 200, r.text
        second = _until(
            lambda: [p for p in policies() if p["config_version"] > first["config_version"]],
            60,
            "the new policy applied",
        )[0]
        assert second["policy"]["revision"] == 2 and second["applied"]["attack_detection"]
        assert "ids" not in second  # every category again: the local rules as they are
        assert "gambling" in second["applied"]["url_block"]
        rc, body = http(st, "vm2", "vm1", path="/", extra=casino)
        assert rc == 0 and "Access blocked" in body, body  # the block page, from the SVM
        http(st, "vm2", "vm1", path="/hs-probe")
        _until(probe_alerts, 15, "the IDS rule back in force")
        run_attack(st, "portscan", "attacker", "vm1", wait_events=0)
        blocks = _until(
            lambda: [e for e in net_events("block") if e.get("src_ip") == attacker],
            15,
            "the attacker blocked",
        )
        assert blocks[0]["block"]["seconds"] == 60  # the policy's block minutes
        assert http(st, "attacker", "vm1", timeout=2)[0] != 0

        # vm2 excluded from network protection in the center: its traffic is no longer
        # inspected (a scan from it goes unnoticed), vm1's still is.
        with center.api() as api:
            vm2 = next(v for v in api.get("/api/v1/vms").json() if v["name"] == "vm2")
            r = api.put(
                f"/api/v1/inventory/nodes/{vm2['id']}/assignment/network",
                json={"mode": "exclude"},
            )
            assert r.status_code == 200, r.text
        third = _until(
            lambda: [p for p in policies() if p["config_version"] > second["config_version"]],
            60,
            "the exclusion applied",
        )[0]
        assert third["not_inspected"] == {"vm2": [vm_addr["vm2"]]}
        assert f"no_scan {vm_addr['vm2']}/32" in third["applied"]["exclusions"]
        before = len(net_events("attack"))
        run_attack(st, "portscan", "vm2", "vm1", wait_events=1.0)
        assert len(net_events("attack")) == before
        assert http(st, "vm2", "vm1")[0] == 0
        assert svm.popen.poll() is None  # never restarted
        svm.stop()
        assert svm.popen.returncode == 0, svm.tail()
        center.stop()
