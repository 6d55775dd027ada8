"""A static inventory from a TOML file: plain hosts, or the lab's namespaces.

    [[datacenter]]
    name = "lab"

    [[cluster]]
    name = "c1"
    datacenter = "lab"

    [[host]]
    name = "host1"
    cluster = "c1"          # or: datacenter = "lab", or nothing (directly under the connection)

    [[vm]]
    name = "vm1"
    host = "host1"
    uuid = "…"             # defaults to a UUID derived from the name
    ip_addresses = ["10.231.0.11"]
    mac_addresses = []
    guest_os = "linux"
    power_state = "on"

Changes are noticed by the file's modification time.
"""

from __future__ import annotations

import os
import time
import tomllib
import uuid
from typing import Any

from vmshield.integration.inventory import InventoryNode
from vmshield.integration.provider import ProviderError

_NAMESPACE = uuid.UUID("6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")  # stable UUIDs for unnamed VMs
_SECTIONS = ("datacenter", "cluster", "host", "vm")


class StaticProvider:
    kind = "static"

    def __init__(self, path: str) -> None:
        self._path = path
        self._mtime = self._stat()

    def _stat(self) -> float:
        try:
            return os.stat(self._path).st_mtime
        except OSError as exc:
            raise ProviderError(f"static inventory {self._path}: {exc.strerror}") from exc

    def snapshot(self) -> list[InventoryNode]:
        try:
            with open(self._path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ProviderError(f"static inventory {self._path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ProviderError(f"static inventory {self._path}: {exc}") from exc
        return parse_static(doc, self._path)

    def wait_for_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            mtime = self._stat()
            if mtime != self._mtime:
                self._mtime = mtime
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        pass


def parse_static(doc: dict[str, Any], source: str = "inventory") -> list[InventoryNode]:
    unknown = set(doc) - set(_SECTIONS)
    if unknown:
        raise ProviderError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}")
    nodes: list[InventoryNode] = []
    keys: dict[str, set[str]] = {kind: set() for kind in _SECTIONS}

    def parent_of(entry: dict[str, Any], where: str, *kinds: str) -> str | None:
        for kind in kinds:
            if kind in entry:
                name = str(entry[kind])
                if name not in keys[kind]:
                    raise ProviderError(f"{where}: {kind} {name!r} is not declared before it")
                return f"{kind}:{name}"
        return None

    for kind in _SECTIONS:
        entries = doc.get(kind, [])
        if not isinstance(entries, list):
            raise ProviderError(f"{source}: [{kind}] must be an array of tables ([[{kind}]])")
        for i, entry in enumerate(entries):
            where = f"{source}: {kind} #{i + 1}"
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name:
                raise ProviderError(f"{where}: needs a non-empty name")
            if name in keys[kind]:
                raise ProviderError(f"{where}: duplicate {kind} name {name!r}")
            keys[kind].add(name)
            key = f"{kind}:{name}"
            if kind == "datacenter":
                nodes.append(InventoryNode(kind, key, name, None))
            elif kind == "cluster":
                nodes.append(InventoryNode(kind, key, name, parent_of(entry, where, "datacenter")))
            elif kind == "host":
                nodes.append(
                    InventoryNode(kind, key, name, parent_of(entry, where, "cluster", "datacenter"))
                )
            else:
                host = parent_of(entry, where, "host")
                attrs = {
                    "uuid": str(entry.get("uuid") or uuid.uuid5(_NAMESPACE, name)),
                    "instance_uuid": str(entry.get("instance_uuid", "")),
                    "guest_os": str(entry.get("guest_os", "")),
                    "ip_addresses": [str(a) for a in entry.get("ip_addresses", [])],
                    "mac_addresses": [str(a) for a in entry.get("mac_addresses", [])],
                    "power_state": str(entry.get("power_state", "on")),
                    "host": host or "",
                }
                if attrs["power_state"] not in ("on", "off", "suspended"):
                    raise ProviderError(f"{where}: power_state must be on, off or suspended")
                nodes.append(InventoryNode(kind, key, name, host, attrs))
    return nodes
