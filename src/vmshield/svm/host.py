"""One host's file-protection services in one process: the SVM scan service and the introspection relay.

`vmshield svm` runs this (with the introspection relay in the same process by default);
`vmshield introspection` runs the relay alone against an SVM reached over `--svm` (see cli).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshield.events import Event
from vmshield.introspection.auth import Authenticator
from vmshield.introspection.relay import Relay
from vmshield.svm.config import Profile, SvmConfig, inventory_from_center, profiles_from_center
from vmshield.svm.eventlog import EveFile
from vmshield.svm.service import ScanService
from vmshield.svm.workers import DEFAULT_FACTORY, WorkerPool
from vmshield.transport.endpoints import Endpoint, start_server

log = logging.getLogger("vmshield.svm")


@dataclass
class HostOptions:
    listen: list[Endpoint] = field(default_factory=list)
    control: str = ""  # Unix socket path for health and on-demand scans
    tls: ssl.SSLContext | None = None
    scanner_factory: str = DEFAULT_FACTORY
    max_inflight: int = 64
    db_poll: float = 5.0  # seconds between checks of the database files for a new version
    relay_listen: list[Endpoint] = field(default_factory=list)  # separate introspection services


def _db_stamp(paths: list[str]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for top in paths:
        for dirpath, _dirs, files in os.walk(top) if os.path.isdir(top) else [("", [], [top])]:
            for name in files:
                full = os.path.join(dirpath, name) if dirpath else name
                with contextlib.suppress(OSError):
                    st = os.stat(full)
                    out.append((full, st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


class HostService:
    def __init__(
        self,
        config: SvmConfig,
        auth: Authenticator,
        opts: HostOptions,
        spool: Callable[[Event], None] | None = None,
    ) -> None:
        self.config = config
        self.opts = opts
        self.events = EveFile(config.eve)
        self.spool = spool  # the center's event spool, when this SVM is enrolled
        self.svm = ScanService(config, self._emit, opts.scanner_factory)
        self.relay = Relay(self.svm, auth, opts.max_inflight)
        self.servers: list[asyncio.AbstractServer] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def _emit(self, event: Event) -> None:
        self.events(event)  # the local EVE log always has it
        if self.spool is not None:
            self.spool(event)

    def apply_center_config(self, cfg: dict[str, Any]) -> None:
        """A new configuration version from the center: per-VM profiles (called from its thread)."""
        base = self.config.profiles.get("default") or Profile()
        self.config.center_profiles = profiles_from_center(cfg, base)
        self.config.center_inventory = inventory_from_center(cfg)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.relay.push_profiles)
        self.config.center_version = int(cfg.get("version", 0))
        log.info(
            "center configuration version %s: %d VM profiles",
            self.config.center_version,
            len(self.config.center_profiles),
        )

    async def _watch_db(self, stop: asyncio.Event) -> None:
        stamp = _db_stamp(self.config.db)
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.opts.db_poll)
            new = await asyncio.to_thread(_db_stamp, self.config.db)
            if new == stamp:
                continue
            stamp = new
            try:
                pool = await asyncio.to_thread(
                    WorkerPool,
                    self.config.worker_count(),
                    self.opts.scanner_factory,
                    self.config.db,
                )
            except Exception as exc:  # a broken update keeps the old database running
                log.error(
                    "signature database reload failed, keeping version %s: %s",
                    self.svm.db_version,
                    exc,
                )
                continue
            if pool.db_version != self.svm.db_version:
                log.info("signature database %s -> %s", self.svm.db_version, pool.db_version)
                self.svm.swap_pool(pool)
            else:
                pool.close()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            for ep in self.opts.listen:
                self.servers.append(await start_server(ep, self.relay.handle, self.opts.tls))
                log.info("listening for agents on %s", ep)
            if self.opts.relay_listen:
                from vmshield.svm.link import SvmLinkServer

                link = SvmLinkServer(self.svm)
                for ep in self.opts.relay_listen:
                    self.servers.append(await start_server(ep, link.handle, self.opts.tls))
                    if ep.scheme == "unix":
                        os.chmod(ep.path, 0o600)  # only root's introspection service may relay
                    log.info("listening for introspection services on %s", ep)
            if self.opts.control:
                if os.path.exists(self.opts.control):
                    os.unlink(self.opts.control)
                Path(self.opts.control).parent.mkdir(parents=True, exist_ok=True)
                self.servers.append(
                    await asyncio.start_unix_server(self.relay.control, path=self.opts.control)
                )
                os.chmod(self.opts.control, 0o600)
            watcher = asyncio.create_task(self._watch_db(stop))
            if ready is not None:
                ready.set()
            await stop.wait()
            watcher.cancel()
        finally:
            for s in self.servers:
                s.close()
            for sess in list(self.relay.sessions.values()):
                await sess.conn.close()
            self.svm.close()
            self.events.close()
