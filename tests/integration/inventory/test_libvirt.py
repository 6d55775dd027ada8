"""libvirt inventory against libvirt's built-in test driver (a real libvirt connection)."""

from __future__ import annotations

import threading
import time
import uuid

import libvirt
import pytest

from vmshield.integration.inventory import InventoryChange
from vmshield.integration.provider import ProviderError, open_provider
from vmshield.integration.sync import InventorySync

# test:///default is private to each connection: changes made through another connection are not
# seen, so the test changes the inventory through the provider's own connection.
URI = "test:///default"


def _domain_xml(name: str, mac: str) -> str:
    return f"""<domain type='test'>
  <name>{name}</name><uuid>{uuid.uuid4()}</uuid><memory>65536</memory>
  <metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
    <libosinfo:os id="http://debian.org/debian/12"/></libosinfo:libosinfo></metadata>
  <os><type>hvm</type></os>
  <devices><interface type='network'><mac address='{mac}'/><source network='default'/></interface></devices>
</domain>"""


def _wait_for(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_snapshot_has_the_host_and_its_running_domain() -> None:
    provider = open_provider("libvirt", {"uri": URI})
    try:
        nodes = provider.snapshot()
    finally:
        provider.close()
    hosts = [n for n in nodes if n.kind == "host"]
    vms = [n for n in nodes if n.kind == "vm"]
    assert len(hosts) == 1 and hosts[0].parent_key is None
    assert [v.name for v in vms] == ["test"]
    vm = vms[0]
    assert vm.parent_key == hosts[0].key
    assert vm.attrs["power_state"] == "on"
    assert vm.attrs["mac_addresses"] == ["aa:bb:cc:dd:ee:ff"]
    assert vm.attrs["ip_addresses"] == ["192.168.122.3"]  # the test driver's DHCP lease
    assert vm.attrs["uuid"] == "6695eb01-f6a4-8304-79aa-97f2502e193f"


def test_domain_events_drive_incremental_sync() -> None:
    provider = open_provider("libvirt", {"uri": URI})
    # The test driver's state lives in this connection only.
    conn = provider._conn  # type: ignore[attr-defined]
    applied: list[InventoryChange] = []
    sync = InventorySync(lambda: provider, applied.extend, wait_seconds=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=sync.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert _wait_for(lambda: any(n.name == "test" for n in sync.nodes))
        dom = conn.defineXML(_domain_xml("new-guest", "52:54:00:12:34:56"))
        assert _wait_for(lambda: any(n.name == "new-guest" for n in sync.nodes))
        node = next(n for n in sync.nodes if n.name == "new-guest")
        assert node.attrs["power_state"] == "off"
        assert node.attrs["guest_os"] == "http://debian.org/debian/12"
        dom.create()
        assert _wait_for(
            lambda: (
                next(n for n in sync.nodes if n.name == "new-guest").attrs["power_state"] == "on"
            )
        )
        conn.lookupByName("test").suspend()
        assert _wait_for(
            lambda: (
                next(n for n in sync.nodes if n.name == "test").attrs["power_state"] == "suspended"
            )
        )
        dom.destroy()
        dom.undefine()
        assert _wait_for(lambda: all(n.name != "new-guest" for n in sync.nodes))
        assert any(c.op == "delete" and c.node.name == "new-guest" for c in applied)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_bad_uri_is_a_clear_error() -> None:
    with pytest.raises(ProviderError, match="cannot connect"):
        open_provider("libvirt", {"uri": "nosuchdriver:///x"})
    with pytest.raises(ProviderError, match="'uri'"):
        open_provider("libvirt", {})


def test_libvirt_error_handler_is_quiet() -> None:
    # libvirt prints errors to stderr unless a handler is set; the provider installs one.
    provider = open_provider("libvirt", {"uri": URI})
    try:
        with pytest.raises(libvirt.libvirtError):
            provider._conn.lookupByName("does-not-exist")  # type: ignore[attr-defined]
    finally:
        provider.close()
