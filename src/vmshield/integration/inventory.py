"""The inventory model every provider (vSphere, libvirt, static TOML) produces.

A provider describes what it sees as a flat list of `InventoryNode`s; the tree is given by
`parent_key`. Keys are stable within one connection (a vSphere managed object id, a libvirt
domain UUID, a name in the TOML file), so the center can diff two snapshots and apply only what
changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Kinds, top to bottom. The center adds the root and the connection node itself.
KINDS = ("datacenter", "folder", "cluster", "host", "vm")


@dataclass(frozen=True)
class InventoryNode:
    kind: str  # one of KINDS
    key: str  # stable id within the connection
    name: str
    parent_key: str | None  # None: directly under the connection
    # For VMs: uuid (BIOS), instance_uuid, guest_os, ip_addresses, mac_addresses, power_state
    # ("on" | "off" | "suspended"), host (the host node's key).
    attrs: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)


@dataclass(frozen=True)
class InventoryChange:
    op: str  # "upsert" | "delete"
    node: InventoryNode


def diff(old: list[InventoryNode], new: list[InventoryNode]) -> list[InventoryChange]:
    """What turns snapshot `old` into `new`: upserts parents first, deletes children first."""
    old_by_key = {n.key: n for n in old}
    new_by_key = {n.key: n for n in new}
    order = {kind: i for i, kind in enumerate(KINDS)}
    upserts = [n for k, n in new_by_key.items() if old_by_key.get(k) != n]
    deletes = [n for k, n in old_by_key.items() if k not in new_by_key]
    upserts.sort(key=lambda n: order.get(n.kind, len(KINDS)))
    deletes.sort(key=lambda n: -order.get(n.kind, len(KINDS)))
    return [InventoryChange("upsert", n) for n in upserts] + [
        InventoryChange("delete", n) for n in deletes
    ]
