"""vSphere inventory through pyVmomi, kept current by the property collector.

One property filter over a container view of the whole inventory; `WaitForUpdatesEx` returns the
full content on its first call and only the changes afterwards, which are folded into an object
cache. `snapshot()` builds the tree from that cache, so a change costs one round trip and no
re-read of the inventory.

The tree shown to users is datacenter → (folders) → cluster → host → VM: vSphere's hidden
folders (each datacenter's host/vm/datastore/network folders) and standalone compute resources
are collapsed, and a VM hangs under the host it runs on.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl
from pyVmomi.VmomiSupport import ManagedObject

from vmshield.integration.inventory import InventoryNode
from vmshield.integration.provider import ProviderError

_PROPERTIES: dict[Any, list[str]] = {
    vim.Datacenter: [
        "name",
        "parent",
        "hostFolder",
        "vmFolder",
        "datastoreFolder",
        "networkFolder",
    ],
    vim.Folder: ["name", "parent"],
    vim.ComputeResource: ["name", "parent"],  # includes ClusterComputeResource
    vim.HostSystem: ["name", "parent", "hardware.systemInfo.uuid"],
    vim.VirtualMachine: [
        "name",
        "config.uuid",
        "config.instanceUuid",
        "config.guestFullName",
        "config.template",
        "guest.ipAddress",
        "guest.net",
        "runtime.powerState",
        "runtime.host",
    ],
}

_POWER = {"poweredOn": "on", "poweredOff": "off", "suspended": "suspended"}


class VSphereProvider:
    kind = "vsphere"

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        verify_tls: bool = True,
        ca_file: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ProviderError(f"vsphere url {url!r} must be https://HOST[:PORT]/sdk")
        context = None
        if parsed.scheme == "https":
            context = ssl.create_default_context(cafile=ca_file)
            if not verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            self._si = SmartConnect(
                host=parsed.hostname,
                port=parsed.port or (443 if parsed.scheme == "https" else 80),
                user=user or urllib.parse.unquote(parsed.username or ""),
                pwd=password or urllib.parse.unquote(parsed.password or ""),
                protocol=parsed.scheme,
                path=parsed.path or "/sdk",
                sslContext=context,
            )
        except vim.fault.InvalidLogin as exc:
            raise ProviderError(
                f"vsphere {parsed.hostname}: login refused ({getattr(exc, 'msg', exc)})"
            ) from exc
        except (OSError, vmodl.MethodFault) as exc:
            raise ProviderError(f"vsphere {parsed.hostname}: cannot connect: {exc}") from exc
        content = self._si.RetrieveContent()
        self._view = content.viewManager.CreateContainerView(
            content.rootFolder, list(_PROPERTIES), True
        )
        self._collector = content.propertyCollector.CreatePropertyCollector()
        pc = vmodl.query.PropertyCollector
        self._collector.CreateFilter(
            pc.FilterSpec(
                objectSet=[
                    pc.ObjectSpec(
                        obj=self._view,
                        skip=True,
                        selectSet=[
                            pc.TraversalSpec(
                                name="view", path="view", skip=False, type=vim.view.ContainerView
                            )
                        ],
                    )
                ],
                propSet=[
                    pc.PropertySpec(type=t, pathSet=paths) for t, paths in _PROPERTIES.items()
                ],
            ),
            partialUpdates=True,
        )
        self._version = ""
        # moId -> (type name, {property path: value}); values that are managed objects are moIds.
        self._objects: dict[str, tuple[str, dict[str, Any]]] = {}
        self._poll(0)  # the first call returns everything
        # A second, immediate call: vcsim (at least) loses changes made before the first
        # versioned call, and against vCenter it only costs one empty round trip.
        self._poll(0)

    # -- provider interface -------------------------------------------------------------------

    def snapshot(self) -> list[InventoryNode]:
        return _build_tree(self._objects)

    def wait_for_change(self, timeout: float) -> bool:
        return self._poll(max(0, int(timeout)))

    def close(self) -> None:
        try:
            self._collector.Destroy()
            self._view.Destroy()
        except (OSError, vmodl.MethodFault):
            pass  # the session may already be gone; closing must not fail
        Disconnect(self._si)

    # -- updates -------------------------------------------------------------------------------

    def _poll(self, max_wait: int) -> bool:
        changed = False
        options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=max_wait)
        retried = False
        while True:
            try:
                update = self._collector.WaitForUpdatesEx(self._version, options)
            except (OSError, http.client.HTTPException) as exc:
                # A kept-alive connection that the server closed while idle: one fresh try.
                if retried:
                    raise ProviderError(f"vsphere: property collector failed: {exc}") from exc
                retried = True
                continue
            except vmodl.MethodFault as exc:
                raise ProviderError(
                    f"vsphere: property collector failed: {getattr(exc, 'msg', exc)}"
                ) from exc
            if update is None:
                return changed
            self._version = update.version
            for filter_update in update.filterSet or []:
                for obj_update in filter_update.objectSet or []:
                    changed |= self._apply(obj_update)
            if not update.truncated:
                return changed
            options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=0)

    def _apply(self, obj_update: Any) -> bool:
        moid = obj_update.obj._moId
        if obj_update.kind == "leave":
            return self._objects.pop(moid, None) is not None
        type_name, props = self._objects.setdefault(moid, (_type_name(obj_update.obj), {}))
        for change in obj_update.changeSet or []:
            if change.op in ("remove", "indirectRemove"):
                props.pop(change.name, None)
            else:
                props[change.name] = _plain(change.val)
        return True


def _type_name(obj: Any) -> str:
    if isinstance(obj, vim.ClusterComputeResource):
        return "cluster"
    for cls, name in (
        (vim.Datacenter, "datacenter"),
        (vim.Folder, "folder"),
        (vim.ComputeResource, "computeresource"),
        (vim.HostSystem, "host"),
        (vim.VirtualMachine, "vm"),
    ):
        if isinstance(obj, cls):
            return name
    return "other"


def _plain(value: Any) -> Any:
    """Managed object references become their moId; NIC lists become (mac, [ips]) pairs."""
    if isinstance(value, ManagedObject):
        return value._moId
    if isinstance(value, list) and value and isinstance(value[0], vim.vm.GuestInfo.NicInfo):
        return [(nic.macAddress or "", list(nic.ipAddress or [])) for nic in value]
    return value


def _build_tree(objects: dict[str, tuple[str, dict[str, Any]]]) -> list[InventoryNode]:
    hidden: set[str] = set()  # each datacenter's own folders: collapsed into the datacenter
    for type_name, props in objects.values():
        if type_name == "datacenter":
            hidden.update(
                str(props[p])
                for p in ("hostFolder", "vmFolder", "datastoreFolder", "networkFolder")
                if p in props
            )

    def visible_parent(moid: str | None) -> str | None:
        seen = 0
        while moid is not None and seen < 64:  # bounded: a malformed answer cannot loop forever
            seen += 1
            entry = objects.get(moid)
            if entry is None:
                return None  # the root folder, outside the view
            type_name, props = entry
            if moid in hidden or type_name == "computeresource":
                moid = props.get("parent")
                continue
            return moid
        return None

    nodes: list[InventoryNode] = []
    used_folders: set[str] = set()
    for moid, (type_name, props) in objects.items():
        if type_name in ("datacenter", "cluster", "host"):
            parent = visible_parent(props.get("parent"))
            # A folder is shown only where it holds part of the datacenter/host tree.
            chain = parent
            while chain is not None and objects[chain][0] == "folder" and chain not in used_folders:
                used_folders.add(chain)
                chain = visible_parent(objects[chain][1].get("parent"))
            attrs = (
                {"uuid": props["hardware.systemInfo.uuid"]}
                if "hardware.systemInfo.uuid" in props
                else {}
            )
            nodes.append(
                InventoryNode(type_name, moid, str(props.get("name", moid)), parent, attrs)
            )
        elif type_name == "vm" and not props.get("config.template"):
            nodes.append(_vm_node(moid, props, objects))
    for moid in used_folders:
        props = objects[moid][1]
        nodes.append(
            InventoryNode(
                "folder", moid, str(props.get("name", moid)), visible_parent(props.get("parent"))
            )
        )
    return nodes


def _vm_node(
    moid: str, props: dict[str, Any], objects: dict[str, tuple[str, dict[str, Any]]]
) -> InventoryNode:
    nics = props.get("guest.net") or []
    ips = sorted(
        {ip for _, addrs in nics for ip in addrs}
        | ({props["guest.ipAddress"]} if props.get("guest.ipAddress") else set())
    )
    macs = sorted({mac for mac, _ in nics if mac})
    host = props.get("runtime.host")
    attrs = {
        "uuid": props.get("config.uuid", ""),
        "instance_uuid": props.get("config.instanceUuid", ""),
        "guest_os": props.get("config.guestFullName", ""),
        "ip_addresses": ips,
        "mac_addresses": macs,
        "power_state": _POWER.get(str(props.get("runtime.powerState", "")), "unknown"),
        "host": host or "",
    }
    parent = host if host in objects else None
    return InventoryNode("vm", moid, str(props.get("name", moid)), parent, attrs)
