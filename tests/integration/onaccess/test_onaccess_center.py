"""On-access protection with the administration center, every part a real process: `vmshield
center` (HTTPS, SQLite), `vmshield svm --enroll` (then mutual TLS), `vmshield agent` on fanotify.

The profile comes from the center (assigned to the cluster, inherited by the VM of the static
inventory); the agent is mapped to the inventory VM by the BIOS UUID it reports; detections reach
the center's event API, and while the center is down they wait in the SVM's spool.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from onaccess_lib import EICAR, Harness, Proc, _env, guest_cat

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

T = TypeVar("T")


def _until(pred: Callable[[], T], timeout: float = 30.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError, KeyError, ValueError):
            v = pred()
            if v:
                return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Center:
    def __init__(self, h: Harness) -> None:
        self.h = h
        self.data = h.root / "center"
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: Proc | None = None
        out = subprocess.run(
            [sys.executable, "-m", "vmshield", "center", "--data", str(self.data)]
            + ["token", "create", "--role", "administrator", "--name", "test"],
            capture_output=True,
            env=_env(),
            timeout=120,
            check=True,
        )
        self.token = out.stdout.decode().strip().splitlines()[-1]

    def start(self) -> None:
        self.proc = self.h._spawn(
            [sys.executable, "-m", "vmshield", "center", "--data", str(self.data)]
            + ["--listen", f"127.0.0.1:{self.port}"],
            "center",
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.popen.poll() is not None:
                raise RuntimeError(f"center exited:\n{self.proc.tail()}")
            with httpx.Client(verify=False, timeout=2) as c:  # noqa: S501 - polling only
                return c.get(f"{self.url}/api/v1/enroll/ca").status_code == 200

        _until(up, 60, "the center to listen")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.stop()

    @contextlib.contextmanager
    def api(self) -> Iterator[httpx.Client]:
        with httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.data / "ca.pem")),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        ) as c:
            yield c


def _find(node: dict[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    if node.get("kind") == kind and node.get("name") == name:
        return node
    for ch in node.get("children") or []:
        got = _find(ch, kind, name)
        if got is not None:
            return got
    return None


def _events(api: httpx.Client, vm: str) -> list[dict[str, Any]]:
    r = api.get("/api/v1/events", params={"vm": vm, "type": "file"})
    r.raise_for_status()
    return list(r.json()["events"])


def _static_inventory(api: Any, inv: Path) -> dict[str, Any]:
    """Register the TOML inventory `inv` with the center; its inventory tree once vm3 is in."""
    r = api.post("/api/v1/connections", json={"name": "lab", "kind": "static", "url": str(inv)})
    assert r.status_code == 201, r.text
    return _until(
        lambda: (t := api.get("/api/v1/inventory").json()) and _find(t, "vm", "vm3") and t,
        60,
        "the static inventory in the center",
    )


def test_center_profile_events_and_spool(harness: Harness) -> None:
    h = harness
    center = Center(h)
    center.start()
    u1, u3 = str(uuid.uuid4()), str(uuid.uuid4())
    inv = h.root / "inventory.toml"
    inv.write_text(
        '[[datacenter]]\nname = "dc"\n\n[[cluster]]\nname = "c1"\ndatacenter = "dc"\n\n'
        '[[host]]\nname = "esx-test"\ncluster = "c1"\n\n'
        f'[[vm]]\nname = "vm1"\nhost = "esx-test"\nuuid = "{u1}"\n\n'
        f'[[vm]]\nname = "vm2"\nhost = "esx-test"\nuuid = "{uuid.uuid4()}"\n\n'
        f'[[vm]]\nname = "vm3"\nhost = "esx-test"\nuuid = "{u3}"\n'
    )
    with center.api() as api:
        tree = _static_inventory(api, inv)
        cluster = _find(tree, "cluster", "c1")
        host = _find(tree, "host", "esx-test")
        assert cluster and host
        # The center's profile says delete; the SVM's local configuration says deny.
        r = api.post(
            "/api/v1/profiles/file",
            json={
                "name": "strict",
                "settings": {"level": "custom", "settings": {"action": "delete"}},
            },
        )
        assert r.status_code == 201, r.text
        profile_id = r.json()["id"]
        r = api.put(
            f"/api/v1/inventory/nodes/{cluster['id']}/assignment/file",
            json={"mode": "profile", "profile_id": profile_id},
        )
        assert r.status_code == 200, r.text
        eff = api.get("/api/v1/vms/vm1/effective").json()
        assert "delete" in str(eff)
        r = api.post("/api/v1/deployments", json={"host_node_id": host["id"]})
        assert r.status_code == 201, r.text
        enrol_token = r.json()["enrolment_token"]

    g1 = h.guest("vm1")
    (g1 / "clean.txt").write_bytes(b"fine\n")
    (g1 / "eicar.com").write_bytes(EICAR)
    svm_data = h.root / "svm-data"
    h.start_svm(
        action="deny",
        vms=("vm1", "vm2", "spare"),
        host="esx-test",
        extra_args=["--enroll", center.url, enrol_token, "--data-dir", str(svm_data)],
    )
    assert (svm_data / "center" / "client.key").exists()
    _until(lambda: h.health()["svm"]["center_version"] > 0, 60, "the center's configuration")
    assert h.health()["svm"]["center_vms"] >= 3

    h.start_agent("vm1", extra=["--dmi-uuid", u1])
    r = guest_cat(g1 / "clean.txt")
    assert r.returncode == 0 and r.stdout == b"fine\n"
    r = guest_cat(g1 / "eicar.com")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    _until(lambda: not (g1 / "eicar.com").exists(), 15, "the center's action (delete)")
    assert (g1 / "clean.txt").exists()
    with center.api() as api:
        evs = _until(
            lambda: [
                e for e in _events(api, "vm1") if e["event"]["file"]["path"].endswith("eicar.com")
            ],
            60,
            "the detection in the center",
        )
        ev = evs[0]
        assert ev["host"] == "esx-test" and ev["event"]["action"] == "delete"
        assert ev["detection"].startswith("Eicar-Test-Signature")
        assert ev["event"]["file"]["sha256"]

    # The center goes down: the detection waits in the SVM's spool and arrives once it is back.
    center.stop()
    (g1 / "eicar2.com").write_bytes(EICAR)
    _until(lambda: not (g1 / "eicar2.com").exists(), 15, "delete while the center is down")
    r = guest_cat(g1 / "eicar2.com")
    assert r.returncode != 0

    def spooled() -> int:
        with contextlib.closing(sqlite3.connect(svm_data / "spool.db", timeout=5)) as db:
            rows = db.execute("SELECT body FROM spool").fetchall()
        return sum(b"eicar2.com" in bytes(b) for (b,) in rows)

    assert _until(spooled, 15, "the event in the spool")
    center.start()
    with center.api() as api:
        _until(
            lambda: [
                e for e in _events(api, "vm1") if e["event"]["file"]["path"].endswith("eicar2.com")
            ],
            90,
            "the spooled detection in the center after its restart",
        )
    _until(lambda: spooled() == 0, 30, "the spool to drain")

    # A profile change in the center reaches the connected agent without a reconnect: *.com
    # files are now excluded from scanning.
    with center.api() as api:
        r = api.put(
            f"/api/v1/profiles/file/{profile_id}",
            json={
                "name": "strict",
                "settings": {
                    "level": "custom",
                    "settings": {"action": "delete", "exclusions": {"extensions": ["com"]}},
                },
            },
        )
        assert r.status_code == 200, r.text
    _until(
        lambda: [
            e for e in h.events() if e["event_type"] == "agent" and e["agent"]["state"] == "profile"
        ],
        60,
        "the new profile at the agent",
    )
    time.sleep(0.5)  # the agent applies it on receipt; give the message time to arrive
    (g1 / "eicar3.com").write_bytes(EICAR)
    assert guest_cat(g1 / "eicar3.com").returncode == 0
    (g1 / "eicar4.exe").write_bytes(EICAR)
    assert guest_cat(g1 / "eicar4.exe").returncode != 0
    assert h.health()["vms"]["vm1"]["connections"] == 1
    _stop_before_center(h, center)


def _stop_before_center(h: Harness, center: Center) -> None:
    # The SVM first: a center stopping waits for the SVM's configuration long-poll to end.
    for proc in reversed(h.procs):
        if proc is not center.proc:
            proc.stop()
    center.stop()


def test_agent_mapped_to_inventory_vm_by_uuid(harness: Harness) -> None:
    """An agent whose credential names no inventory VM is that VM whose BIOS UUID it reports; a
    credential for one inventory VM used with another VM's UUID is refused."""
    h = harness
    center = Center(h)
    center.start()
    u1, u3 = str(uuid.uuid4()), str(uuid.uuid4())
    inv = h.root / "inventory.toml"
    inv.write_text(
        '[[host]]\nname = "esx-test"\n\n'
        f'[[vm]]\nname = "vm1"\nhost = "esx-test"\nuuid = "{u1}"\n\n'
        f'[[vm]]\nname = "vm3"\nhost = "esx-test"\nuuid = "{u3}"\n'
    )
    with center.api() as api:
        api.post("/api/v1/connections", json={"name": "lab", "kind": "static", "url": str(inv)})
        _until(lambda: len(api.get("/api/v1/vms").json()) >= 2, 60, "the inventory")
        hosts = {x["name"]: x["node_id"] for x in api.get("/api/v1/hosts").json()}
        r = api.post("/api/v1/deployments", json={"host_node_id": hosts["esx-test"]})
        assert r.status_code == 201, r.text
        enrol_token = r.json()["enrolment_token"]
    h.start_svm(
        vms=("vm1", "spare"),
        host="esx-test",
        extra_args=["--enroll", center.url, enrol_token, "--data-dir", str(h.root / "svm-data")],
    )
    _until(lambda: h.health()["svm"]["center_vms"] > 0, 60, "the center's configuration")
    # The lab's name for this guest is "spare"; the inventory knows its UUID as vm3 (SMBIOS
    # byte order, as older VMs report it).
    from vmshield.svm.config import swapped_uuid

    h.start_agent("spare", wait_connected=False, extra=["--dmi-uuid", swapped_uuid(u3)])
    h.wait_connected("vm3")
    assert "spare" not in h.health()["agents"]
    # vm1's token in a VM reporting vm3's UUID (a cloned disk): refused.
    from vmshield.transport import protocol as p

    def hello(uuid_: str) -> p.Message:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(h.sock))
            info = p.VmInfo(dmi_uuid=uuid_, machine_id="m", hostname="guest")
            s.sendall(p.encode(p.Hello(versions=[1], info=info, token=h.tokens["vm1"])))
            dec, msgs = p.FrameDecoder(), []
            while not msgs:
                data = s.recv(65536)
                assert data, "closed without an answer"
                msgs += dec.feed(data)
            return msgs[0]

    m = hello(u3)
    assert isinstance(m, p.Error) and m.code == "auth" and "credential for vm1" in m.message
    # The refused clone did not capture the (not yet bound) token: the real vm1 still gets in.
    m = hello(u1)
    assert isinstance(m, p.Welcome) and m.vm == "vm1"
    assert "vm1" not in h.health()["agents"]
    _stop_before_center(h, center)


def test_vms_the_center_does_not_protect_are_not_scanned(harness: Harness) -> None:
    """vm1 has the center's profile, vm2 is excluded, vm3 has nothing assigned (unprotected):
    the SVM's local default (deny) must not apply to vm2 and vm3; their files are not scanned,
    and nothing is remembered as clean once the center protects them."""
    h = harness
    center = Center(h)
    center.start()
    uuids = {vm: str(uuid.uuid4()) for vm in ("vm1", "vm2", "vm3")}
    inv = h.root / "inventory.toml"
    inv.write_text(
        '[[host]]\nname = "esx-test"\n\n'
        + "".join(
            f'[[vm]]\nname = "{vm}"\nhost = "esx-test"\nuuid = "{u}"\n\n' for vm, u in uuids.items()
        )
    )
    with center.api() as api:
        tree = _static_inventory(api, inv)
        node = {vm: _find(tree, "vm", vm)["id"] for vm in ("vm1", "vm2", "vm3")}  # type: ignore[index]
        r = api.post(
            "/api/v1/profiles/file",
            json={"name": "std", "settings": {"level": "custom", "settings": {"action": "delete"}}},
        )
        assert r.status_code == 201, r.text
        profile_id = r.json()["id"]
        for vm, body in (
            ("vm1", {"mode": "profile", "profile_id": profile_id}),
            ("vm2", {"mode": "exclude"}),
        ):
            r = api.put(f"/api/v1/inventory/nodes/{node[vm]}/assignment/file", json=body)
            assert r.status_code == 200, r.text
        statuses = {
            vm: api.get(f"/api/v1/vms/{vm}/effective").json()["file"]["status"]
            for vm in ("vm1", "vm2", "vm3")
        }
        assert statuses == {"vm1": "protected", "vm2": "excluded", "vm3": "unprotected"}
        host = _find(tree, "host", "esx-test")
        assert host
        r = api.post("/api/v1/deployments", json={"host_node_id": host["id"]})
        assert r.status_code == 201, r.text
        enrol_token = r.json()["enrolment_token"]

    guests = {vm: h.guest(vm) for vm in ("vm1", "vm2", "vm3")}
    for g in guests.values():
        (g / "eicar.com").write_bytes(EICAR)
    h.start_svm(
        action="deny",  # the local default: what vm2 and vm3 got before (scanned, refused)
        vms=("vm1", "vm2", "vm3"),
        host="esx-test",
        extra_args=["--enroll", center.url, enrol_token, "--data-dir", str(h.root / "svm-data")],
    )
    _until(lambda: h.health()["svm"]["center_vms"] >= 3, 60, "the center's configuration")
    for vm in guests:
        h.start_agent(vm, extra=["--dmi-uuid", uuids[vm]])

    for vm in ("vm2", "vm3"):
        for _ in range(2):  # asked again each time: an unscanned answer is never cached
            r = guest_cat(guests[vm] / "eicar.com")
            assert r.returncode == 0 and r.stdout == EICAR, (vm, r.stderr)
    r = guest_cat(guests["vm1"] / "eicar.com")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    _until(lambda: not (guests["vm1"] / "eicar.com").exists(), 15, "the center's action (delete)")
    svm = h.health()["svm"]
    assert svm["unprotected_per_vm"] == {"vm2": 2, "vm3": 2}
    assert svm["scans"] == 1 and svm["detections"] == 1  # vm1's file only
    assert (guests["vm2"] / "eicar.com").exists() and (guests["vm3"] / "eicar.com").exists()

    # The center now protects vm2: the file it read unscanned a moment ago is refused.
    version = h.health()["svm"]["center_version"]
    with center.api() as api:
        r = api.put(
            f"/api/v1/inventory/nodes/{node['vm2']}/assignment/file",
            json={"mode": "profile", "profile_id": profile_id},
        )
        assert r.status_code == 200, r.text
    _until(lambda: h.health()["svm"]["center_version"] > version, 60, "the new configuration")
    r = guest_cat(guests["vm2"] / "eicar.com")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    _until(lambda: not (guests["vm2"] / "eicar.com").exists(), 15, "delete in vm2")
    with center.api() as api:
        _until(lambda: _events(api, "vm2"), 60, "vm2's detection in the center")
        assert _events(api, "vm3") == []
    _stop_before_center(h, center)
