"""Connections configured in the center are synced into its inventory tree: a static TOML file
(changes noticed by mtime) and libvirt's test:///default driver."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import httpx
import pytest

from vmshield.center.testing import RunningCenter

TOML = """
[[datacenter]]
name = "lab"
[[cluster]]
name = "c1"
datacenter = "lab"
[[host]]
name = "host1"
cluster = "c1"
[[vm]]
name = "vm1"
host = "host1"
ip_addresses = ["10.231.0.11"]
"""


@pytest.fixture
def db_url() -> None:
    """SQLite only here: the sync is database-independent and both databases are covered by the
    store's own tests."""
    return None


def _api(rc: RunningCenter, admin: dict) -> httpx.Client:
    return httpx.Client(
        base_url=rc.url,
        verify=ssl.create_default_context(cafile=rc.ca_path),
        headers=admin,
        timeout=30,
    )


def _vms(api: httpx.Client) -> dict[str, dict]:
    out: dict[str, dict] = {}

    def walk(n: dict) -> None:
        if n["kind"] == "vm":
            out[n["name"]] = n
        for c in n["children"]:
            walk(c)

    walk(api.get("/api/v1/inventory").json())
    return out


def _until(pred, timeout: float = 30.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.3)
    return pred()


def test_static_connection_synced_and_followed(
    live: RunningCenter, admin: dict, tmp_path: Path
) -> None:
    inv = tmp_path / "inventory.toml"
    inv.write_text(TOML)
    api = _api(live, admin)
    r = api.post("/api/v1/connections", json={"name": "lab", "kind": "static", "url": str(inv)})
    assert r.status_code == 201
    vms = _until(lambda: _vms(api).get("vm1"))
    assert vms and vms["attrs"]["ip_addresses"] == ["10.231.0.11"]
    # Assign at the cluster, then the file changes: a new VM appears and inherits.
    tree = api.get("/api/v1/inventory").json()
    cluster = next(
        n for n in tree["children"][0]["children"][0]["children"] if n["kind"] == "cluster"
    )
    p = api.post("/api/v1/profiles/file", json={"name": "std", "settings": {}}).json()
    api.put(
        f"/api/v1/inventory/nodes/{cluster['id']}/assignment/file",
        json={"mode": "profile", "profile_id": p["id"]},
    )
    inv.write_text(TOML + '\n[[vm]]\nname = "vm2"\nhost = "host1"\npower_state = "off"\n')
    os.utime(inv, (time.time() + 5, time.time() + 5))
    vm2 = _until(lambda: _vms(api).get("vm2"))
    assert vm2 and vm2["attrs"]["power_state"] == "off"
    assert vm2["protection"]["file"]["status"] == "protected"
    # The assignment survived the resync (nodes are updated in place, not recreated).
    assert _vms(api)["vm1"]["protection"]["file"]["profile"] == "std"
    api.close()


def test_bad_connection_reports_its_error(live: RunningCenter, admin: dict, tmp_path: Path) -> None:
    api = _api(live, admin)
    api.post(
        "/api/v1/connections",
        json={"name": "gone", "kind": "static", "url": str(tmp_path / "missing.toml")},
    )
    conn = _until(
        lambda: next((c for c in api.get("/api/v1/connections").json() if c["last_error"]), None)
    )
    assert conn and "missing.toml" in conn["last_error"]
    api.close()


def test_libvirt_test_driver_connection(live: RunningCenter, admin: dict) -> None:
    pytest.importorskip("libvirt")
    api = _api(live, admin)
    api.post(
        "/api/v1/connections", json={"name": "kvm", "kind": "libvirt", "url": "test:///default"}
    )
    vms = _until(lambda: _vms(api))
    assert vms, api.get("/api/v1/connections").json()
    vm = next(iter(vms.values()))
    assert vm["attrs"].get("uuid")
    api.close()


def test_vsphere_connection_against_vcsim(live: RunningCenter, admin: dict, vcsim) -> None:  # noqa: ANN001
    """A vCenter configured in the center (password encrypted at rest) fills the tree; a VM
    powered off in vCenter shows up as such; a cluster's profile reaches its VMs."""
    import urllib.parse

    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim
    from sqlalchemy import select

    from vmshield.center.db import Connection

    api = _api(live, admin)
    r = api.post(
        "/api/v1/connections",
        json={
            "name": "vc",
            "kind": "vsphere",
            "url": vcsim.url,
            "username": vcsim.user,
            "password": vcsim.password,
        },
    )
    assert r.status_code == 201
    with live.ctx.store.sessions() as s:
        assert vcsim.password not in s.scalar(select(Connection)).secret_enc
    vms = _until(lambda: _vms(api).get("DC0_C0_RP0_VM0"), 60)
    assert vms, api.get("/api/v1/connections").json()
    assert vms["attrs"]["power_state"] == "on" and vms["attrs"]["uuid"]
    tree = api.get("/api/v1/inventory").json()
    found: list = []

    def walk(n: dict) -> None:
        if n["kind"] == "cluster" and n["name"] == "DC0_C0":
            found.append(n)
        for c in n["children"]:
            walk(c)

    walk(tree)
    p = api.post("/api/v1/profiles/file", json={"name": "vc-std", "settings": {}}).json()
    api.put(
        f"/api/v1/inventory/nodes/{found[0]['id']}/assignment/file",
        json={"mode": "profile", "profile_id": p["id"]},
    )
    eff = api.get(f"/api/v1/vms/{vms['attrs']['uuid']}/effective").json()
    assert eff["file"]["profile"]["name"] == "vc-std" and eff["file"]["source"]["name"] == "DC0_C0"
    u = urllib.parse.urlparse(vcsim.url)
    si = SmartConnect(
        host=u.hostname, port=u.port, user=vcsim.user, pwd=vcsim.password, protocol="http"
    )
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        vm = next(o for o in view.view if o.name == "DC0_C0_RP0_VM0")
        view.Destroy()
        WaitForTask(vm.PowerOffVM_Task())
    finally:
        Disconnect(si)
    off = _until(lambda: _vms(api)["DC0_C0_RP0_VM0"]["attrs"]["power_state"] == "off", 30)
    assert off
    api.close()
