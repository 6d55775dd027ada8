"""Runs the inventory sync (vmshield.integration.sync) for every connection configured in the
center: one thread per connection, started when the connection appears, stopped when it is
deleted. The sync starts from what the database already holds, so a restart changes nothing that
did not change; errors land in the connection's `last_error` for the console and the API."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import select, update

from vmshield.center.db import Connection, Node
from vmshield.center.store import Store
from vmshield.integration.inventory import KINDS, InventoryNode

log = logging.getLogger("vmshield.center.sync")


def provider_settings(c: Connection) -> dict[str, Any]:
    """The connection's stored fields as the provider settings open_provider expects."""
    s: dict[str, Any] = dict(c.options or {})
    if c.kind == "vsphere":
        s.setdefault("url", c.url)
        s.setdefault("user", c.username)
    elif c.kind == "libvirt":
        s.setdefault("uri", c.url)
    elif c.kind == "static":
        s.setdefault("path", c.url)
    return s


def stored_snapshot(store: Store, connection_id: int) -> list[InventoryNode]:
    """The connection's inventory as stored, in the providers' own terms (for diffing)."""
    with store.sessions() as s:
        rows = list(s.scalars(select(Node).where(Node.connection_id == connection_id)))
    by_id = {n.id: n for n in rows}
    out = []
    for n in rows:
        if n.kind not in KINDS:
            continue
        parent = by_id.get(n.parent_id or -1)
        parent_key = parent.key if parent is not None and parent.kind in KINDS else None
        out.append(InventoryNode(n.kind, n.key, n.name, parent_key, dict(n.attrs or {})))
    return out


class SyncManager:
    def __init__(self, store: Store, stop: threading.Event, rescan: float = 5.0) -> None:
        self.store = store
        self.stop = stop
        self.rescan = rescan
        self.running: dict[int, tuple[threading.Event, threading.Thread, tuple[Any, ...]]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.reconcile()
            except Exception:  # the database may be down; try again next round
                log.exception("inventory sync manager")
            self.stop.wait(self.rescan)
        for ev, _t, _sig in self.running.values():
            ev.set()

    def reconcile(self) -> None:
        with self.store.sessions() as s:
            conns = {
                c.id: (c, self.store.connection_secret(s, c.id))
                for c in s.scalars(select(Connection))
            }
        for cid in list(self.running):
            c_entry = conns.get(cid)
            ev, t, sig = self.running[cid]
            # Deleted or edited: stop the old sync (an edited one is started again below).
            if c_entry is None or _signature(*c_entry) != sig or not t.is_alive():
                ev.set()
                del self.running[cid]
        for cid, (c, secret) in conns.items():
            if cid not in self.running:
                self._start(c, secret)

    def _start(self, c: Connection, secret: str) -> None:
        from vmshield.integration.provider import open_provider
        from vmshield.integration.sync import InventorySync

        cid, kind, settings = c.id, c.kind, provider_settings(c)

        def on_error(msg: str) -> None:
            log.warning("connection %s: %s", c.name, msg)
            with self.store.sessions.begin() as s:
                s.execute(
                    update(Connection).where(Connection.id == cid).values(last_error=msg[:2000])
                )

        sync = InventorySync(
            lambda: open_provider(kind, settings, secret),
            lambda changes: self._apply(cid, changes),
            known=stored_snapshot(self.store, cid),
            on_error=on_error,
        )
        ev = threading.Event()
        t = threading.Thread(
            target=self._run_one, args=(sync, ev, cid), daemon=True, name=f"inventory-sync-{cid}"
        )
        self.running[cid] = (ev, t, _signature(c, secret))
        t.start()

    def _apply(self, cid: int, changes: Any) -> None:
        self.store.apply_changes(cid, changes)

    def _run_one(self, sync: Any, ev: threading.Event, cid: int) -> None:
        # The sync stops on its own event or the center's.
        def watch() -> None:
            while not ev.wait(0.5):
                if self.stop.is_set():
                    ev.set()

        threading.Thread(target=watch, daemon=True).start()
        try:
            sync.run(ev)
        except Exception:  # run() reports through on_error; this is the database going away
            log.exception("inventory sync of connection %s stopped", cid)


def _signature(c: Connection, secret: str) -> tuple[Any, ...]:
    return (c.kind, c.url, c.username, repr(sorted((c.options or {}).items())), secret)
