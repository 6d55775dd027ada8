"""`vmshield svm --network-mode`: the SVM process also runs the network protection of its host's
bridge (a lab made by the test: namespaces, a bridge, veth ports; the filter's own service is not
started by the lab), forwards its events to the center it is enrolled with, and stops it,
leaving nothing behind."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "filter"))

from filterlab_lib import http, lab_up  # noqa: E402
from onaccess_lib import Harness  # noqa: E402
from test_onaccess_center import Center, _until  # noqa: E402

from vmshield.lab.attacks import run_attack  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


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
        harness.start_svm(
            extra_args=[
                "--enroll",
                center.url,
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
        )
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
