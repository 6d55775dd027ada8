"""vSphere inventory against VMware's own simulator (vcsim), full and incremental."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from vmshield.integration.inventory import InventoryChange
from vmshield.integration.provider import ProviderError, open_provider
from vmshield.integration.sync import InventorySync


def _settings(vcsim) -> dict:
    return {"url": vcsim.url, "user": vcsim.user}


@pytest.fixture
def vc(vcsim) -> Iterator[vim.ServiceInstanceContent]:
    """A separate admin session on the simulator, to change the inventory behind our back."""
    u = urllib.parse.urlparse(vcsim.url)
    si = SmartConnect(
        host=u.hostname, port=u.port, user=vcsim.user, pwd=vcsim.password, protocol="http"
    )
    yield si.RetrieveContent()
    Disconnect(si)


def _find(content, vimtype, name):
    view = content.viewManager.CreateContainerView(content.rootFolder, [vimtype], True)
    try:
        return next(o for o in view.view if o.name == name)
    finally:
        view.Destroy()


def _wait_for(predicate: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_snapshot_is_the_datacenter_cluster_host_vm_tree(vcsim) -> None:
    provider = open_provider("vsphere", _settings(vcsim), vcsim.password)
    try:
        nodes = {n.key: n for n in provider.snapshot()}
    finally:
        provider.close()
    by_name = {n.name: n for n in nodes.values()}
    dc = by_name["DC0"]
    assert dc.kind == "datacenter" and dc.parent_key is None
    cluster = by_name["DC0_C0"]
    assert cluster.kind == "cluster" and cluster.parent_key == dc.key
    clustered = by_name["DC0_C0_H0"]
    assert clustered.kind == "host" and clustered.parent_key == cluster.key
    assert clustered.attrs["uuid"]
    standalone = by_name["DC0_H0"]  # a host outside any cluster hangs under the datacenter
    assert standalone.kind == "host" and standalone.parent_key == dc.key
    vms = [n for n in nodes.values() if n.kind == "vm"]
    assert {v.name for v in vms} >= {"DC0_H0_VM0", "DC0_C0_RP0_VM0"}
    for vm in vms:
        assert vm.parent_key is not None and nodes[vm.parent_key].kind == "host"
        assert vm.attrs["host"] == vm.parent_key
        assert len(vm.attrs["uuid"]) == 36 and len(vm.attrs["instance_uuid"]) == 36
        assert vm.attrs["power_state"] == "on"
        assert vm.attrs["mac_addresses"]
    # vSphere's hidden folders (host, vm, datastore, network) are not shown
    assert not [n for n in nodes.values() if n.kind == "folder"]


def test_wrong_password_is_a_clear_error(vcsim) -> None:
    # the simulator is started with one user and password (tests/vcsim/main.go)
    with pytest.raises(ProviderError, match="login refused|cannot connect"):
        open_provider("vsphere", {"url": vcsim.url, "user": vcsim.user}, "wrong-password")


def test_unreachable_vcenter_is_a_clear_error() -> None:
    with pytest.raises(ProviderError, match="cannot connect"):
        open_provider("vsphere", {"url": "http://127.0.0.1:9/sdk", "user": "u"}, "p")


def test_changes_while_syncing_arrive_within_seconds(vcsim, vc) -> None:
    applied: list[InventoryChange] = []
    lock = threading.Lock()

    def apply(changes: list[InventoryChange]) -> None:
        with lock:
            applied.extend(changes)

    errors: list[str] = []
    sync = InventorySync(
        lambda: open_provider("vsphere", _settings(vcsim), vcsim.password),
        apply,
        wait_seconds=1,
        on_error=errors.append,
    )
    stop = threading.Event()
    thread = threading.Thread(target=sync.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert _wait_for(lambda: any(c.node.name == "DC0_C0_RP0_VM1" for c in applied))
        initial = len(applied)

        def current() -> dict[str, Any]:
            return {n.name: n for n in sync.nodes}

        # Each change below must show up on its own, within seconds, without a full re-read.
        WaitForTask(_find(vc, vim.VirtualMachine, "DC0_C0_RP0_VM0").PowerOffVM_Task())
        assert _wait_for(lambda: current()["DC0_C0_RP0_VM0"].attrs["power_state"] == "off"), errors

        WaitForTask(_find(vc, vim.VirtualMachine, "DC0_H0_VM1").Rename_Task("renamed-vm"))
        assert _wait_for(lambda: "renamed-vm" in current() and "DC0_H0_VM1" not in current())

        dc = _find(vc, vim.Datacenter, "DC0")
        cluster = _find(vc, vim.ClusterComputeResource, "DC0_C0")
        spec = vim.vm.ConfigSpec(
            name="created-vm",
            guestId="otherGuest",
            numCPUs=1,
            memoryMB=64,
            files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
        )
        WaitForTask(dc.vmFolder.CreateVM_Task(config=spec, pool=cluster.resourcePool))
        assert _wait_for(lambda: "created-vm" in current()), errors
        WaitForTask(_find(vc, vim.VirtualMachine, "created-vm").PowerOnVM_Task())
        assert _wait_for(
            lambda: (
                current()["created-vm"].attrs["power_state"] == "on"
                and current()["created-vm"].parent_key is not None
            )
        ), errors

        doomed = _find(vc, vim.VirtualMachine, "DC0_H0_VM0")
        WaitForTask(doomed.PowerOffVM_Task())
        # vcsim drops a batch that holds a change and the removal of the same VM, so let the
        # power-off be seen first (vCenter itself has no such problem).
        assert _wait_for(lambda: current()["DC0_H0_VM0"].attrs["power_state"] == "off"), errors
        WaitForTask(doomed.Destroy_Task())
        assert _wait_for(lambda: "DC0_H0_VM0" not in current()), errors
        with lock:
            later = applied[initial:]
        assert any(c.op == "delete" and c.node.name == "DC0_H0_VM0" for c in later)
        assert any(c.op == "upsert" and c.node.name == "created-vm" for c in later)
        assert errors == []
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()


def test_sync_reconnects_after_the_server_goes_away(vcsim_binary) -> None:
    """The sync loop reports a lost vCenter and retries with backoff instead of dying."""
    import subprocess

    errors: list[str] = []
    opened = threading.Event()

    def opener():
        opened.set()
        return open_provider("vsphere", {"url": "http://127.0.0.1:9/sdk", "user": "u"}, "p")

    sync = InventorySync(
        opener, lambda _c: None, backoff_min=0.05, backoff_max=0.1, on_error=errors.append
    )
    stop = threading.Event()
    thread = threading.Thread(target=sync.run, args=(stop,), daemon=True)
    thread.start()
    assert _wait_for(lambda: len(errors) >= 3, 10)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert all("cannot connect" in e for e in errors)
    del subprocess
