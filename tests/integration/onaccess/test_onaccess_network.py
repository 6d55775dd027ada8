"""`vmshield svm --network-mode`: the SVM process also runs the network protection of its host's
bridge (a lab made by the test: namespaces, a bridge, veth ports; the filter's own service is not
started by the lab), and stops it, leaving nothing behind."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "filter"))

from filterlab_lib import http, lab_up  # noqa: E402
from onaccess_lib import Harness  # noqa: E402

from vmshield.lab.attacks import run_attack  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


def test_svm_runs_network_protection_of_the_bridge(tmp_path: Path, harness: Harness) -> None:
    with lab_up(tmp_path / "lab", vms=2, protect="none", onaccess=False) as st:
        attacker = st.host("attacker").address
        assert http(st, "attacker", "vm1")[0] == 0
        harness.start_svm(
            extra_args=[
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
        blocks: list[dict] = []  # type: ignore[type-arg]
        while not blocks and time.monotonic() < deadline:
            blocks = [
                e
                for e in harness.events()
                if e.get("event_type") == "block" and e.get("src_ip") == attacker
            ]
            time.sleep(0.2)
        assert blocks, json.dumps(harness.events()[-5:])
        assert blocks[0]["host"] == "testhost"
        # Blocked in the kernel; the VMs keep talking to each other.
        assert http(st, "attacker", "vm1", timeout=2)[0] != 0
        rc, body = http(st, "vm1", "vm2")
        assert rc == 0 and "lab VM vm2" in body
        assert harness.svm is not None
        harness.svm.stop()
        assert harness.svm.popen.returncode == 0, harness.svm.tail()
        # Stopped with the SVM: lab_up checks that no rule, set or chain of it is left.
        assert os.path.exists(harness.eve)
