"""libvirt inventory (KVM/QEMU hosts, or libvirt's `test:///default` driver in tests).

A libvirt connection is one host: the tree is host → VMs. Changes arrive as libvirt domain events
(lifecycle, device added or removed, metadata), delivered by libvirt's default event loop, which
runs in one daemon thread per process (libvirt allows only one).
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from vmshield.integration.inventory import InventoryNode
from vmshield.integration.provider import ProviderError

_POWER = {
    libvirt.VIR_DOMAIN_RUNNING: "on",
    libvirt.VIR_DOMAIN_BLOCKED: "on",
    libvirt.VIR_DOMAIN_PAUSED: "suspended",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_SHUTDOWN: "on",  # shutting down
    libvirt.VIR_DOMAIN_SHUTOFF: "off",
    libvirt.VIR_DOMAIN_CRASHED: "off",
}
_LIBOSINFO = "{http://libosinfo.org/xmlns/libvirt/domain/1.0}"

_loop_lock = threading.Lock()
_loop_started = False


def _ensure_event_loop() -> None:
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class LibvirtProvider:
    kind = "libvirt"

    def __init__(self, uri: str) -> None:
        _ensure_event_loop()
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors come as exceptions
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise ProviderError(f"libvirt {uri}: cannot connect: {exc}") from exc
        self._uri = uri
        self._changed = threading.Event()
        self._callbacks: list[int] = []
        for event_id in (
            libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
            libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
            libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
        ):
            try:
                self._callbacks.append(
                    self._conn.domainEventRegisterAny(None, event_id, self._on_event, None)
                )
            except libvirt.libvirtError:
                pass  # an older daemon without this event: lifecycle still tells most changes
        self._host_key, self._host_name, self._host_uuid = self._host_identity()

    def _on_event(self, *_args: Any) -> None:
        self._changed.set()

    def _host_identity(self) -> tuple[str, str, str]:
        try:
            caps = ET.fromstring(self._conn.getCapabilities())
            uuid = caps.findtext("host/uuid") or ""
            name = self._conn.getHostname()
        except libvirt.libvirtError as exc:
            raise ProviderError(f"libvirt {self._uri}: cannot read host identity: {exc}") from exc
        return f"host-{uuid or name}", name, uuid

    # -- provider interface -------------------------------------------------------------------

    def snapshot(self) -> list[InventoryNode]:
        nodes = [
            InventoryNode(
                "host",
                self._host_key,
                self._host_name,
                None,
                {"uuid": self._host_uuid, "uri": self._uri},
            )
        ]
        try:
            domains = self._conn.listAllDomains()
        except libvirt.libvirtError as exc:
            raise ProviderError(f"libvirt {self._uri}: cannot list domains: {exc}") from exc
        for dom in domains:
            try:
                nodes.append(self._vm_node(dom))
            except libvirt.libvirtError:
                continue  # undefined while we looked: the next event brings the truth
        return nodes

    def wait_for_change(self, timeout: float) -> bool:
        if not self._conn.isAlive():
            raise ProviderError(f"libvirt {self._uri}: connection lost")
        changed = self._changed.wait(timeout)
        self._changed.clear()
        return changed

    def close(self) -> None:
        for callback_id in self._callbacks:
            try:
                self._conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass

    # -- details -------------------------------------------------------------------------------

    def _vm_node(self, dom: Any) -> InventoryNode:
        state = dom.state()[0]
        desc = ET.fromstring(dom.XMLDesc(0))
        macs = sorted({m.get("address", "") for m in desc.iter("mac") if m.get("address")})
        os_node = desc.find(f"metadata/{_LIBOSINFO}libosinfo/{_LIBOSINFO}os")
        guest_os = (
            os_node.get("id", "") if os_node is not None else (desc.findtext("os/type") or "")
        )
        ips: set[str] = set()
        if state == libvirt.VIR_DOMAIN_RUNNING:
            for source in (
                libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
                libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
            ):
                try:
                    for iface in (dom.interfaceAddresses(source) or {}).values():
                        ips.update(a["addr"] for a in iface.get("addrs") or [] if a.get("addr"))
                except libvirt.libvirtError:
                    continue  # no DHCP lease and no guest agent: addresses unknown
                if ips:
                    break
        attrs = {
            "uuid": dom.UUIDString(),
            "instance_uuid": "",
            "guest_os": guest_os,
            "ip_addresses": sorted(ips),
            "mac_addresses": macs,
            "power_state": _POWER.get(state, "unknown"),
            "host": self._host_key,
        }
        return InventoryNode("vm", dom.UUIDString(), dom.name(), self._host_key, attrs)
