"""The SVM's scan service: verdicts for every VM of the host, from a shared cache or the workers.

The agent sends the file's SHA-256 first. A (hash, database version) already in the verdict cache is
answered at once, whichever VM asked; otherwise the content is fetched from the agent, its hash
checked (a guest must not poison the cache shared with other VMs), scanned once in a worker process
even when many VMs ask at the same time, and cached. The VM's profile turns the result into an
action; a backup copy is kept before disinfection, deletion or quarantine; every detection and
action is an event.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from vmshield.events import SEVERITY_HIGH, SEVERITY_MEDIUM, Event
from vmshield.svm.backup import BackupStore
from vmshield.svm.cache import CachedResult, VerdictCache
from vmshield.svm.config import Profile, SvmConfig
from vmshield.svm.fair import Busy, FairSlots
from vmshield.svm.workers import DEFAULT_FACTORY, WorkerPool
from vmshield.transport import protocol as p

log = logging.getLogger("vmshield.svm")

FetchContent = Callable[[], Awaitable[bytes]]
EventSink = Callable[[Event], None]
MAX_ONACCESS_SIZE = 100 * 1024 * 1024  # the engine's max_file_size: larger files are not fetched
UNPROTECTED = "unprotected"  # verdict status for a VM the center does not protect


class ContentMismatch(Exception):
    pass


@dataclass
class Decision:
    verdict: p.Verdict
    replacement: bytes | None = None  # disinfected content the agent writes in place


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)  # per VM: accesses, scans ordered
    prefetches: Counter[str] = field(default_factory=Counter)  # per VM: agents' read-ahead
    unprotected: Counter[str] = field(default_factory=Counter)  # per VM: allowed unscanned
    scans: int = 0
    scanned_bytes: int = 0
    cache_hits: int = 0
    detections: int = 0
    busy: int = 0
    content_mismatch: int = 0
    decide_s: float = 0.0  # time from request to verdict, all requests (mean = decide_s/decided)
    decided: int = 0
    worker_s: float = 0.0  # time in the scan workers (mean = worker_s/scans)


class ScanService:
    def __init__(
        self,
        config: SvmConfig,
        emit: EventSink,
        scanner_factory: str = DEFAULT_FACTORY,
        pool: WorkerPool | None = None,
    ) -> None:
        self.config = config
        self.emit = emit
        self.pool = pool or WorkerPool(config.worker_count(), scanner_factory, config.db)
        self.db_version = self.pool.db_version
        self.cache = VerdictCache(config.cache_entries)
        self.slots = FairSlots(self.pool.workers, config.per_vm_concurrency, config.queue)
        self.backup = BackupStore(config.backup_dir)
        self.stats = Stats()
        self._inflight: dict[tuple[str, str], asyncio.Future[CachedResult]] = {}
        self._db_listeners: list[Callable[[str], None]] = []
        self.identities: dict[str, str] = {}  # VM -> the DMI UUID / machine id its agent reported

    # ------------------------------------------------------------------ database
    def on_db_change(self, fn: Callable[[str], None]) -> None:
        self._db_listeners.append(fn)

    def swap_pool(self, pool: WorkerPool) -> None:
        """A reloaded database: new workers, a new version; every agent flushes its clean caches."""
        old, self.pool = self.pool, pool
        self.db_version = pool.db_version
        self.cache.drop_versions_except(self.db_version)
        old.close()
        for fn in self._db_listeners:
            fn(self.db_version)

    def profile(self, vm: str) -> Profile:
        return self.config.profile_for(vm, self.identities.get(vm, ""))

    # ------------------------------------------------------------------ decisions
    async def decide(self, vm: str, req: p.ScanRequest, fetch: FetchContent) -> Decision:
        t0 = time.perf_counter()
        try:
            return await self._decide(vm, req, fetch)
        finally:
            self.stats.decide_s += time.perf_counter() - t0
            self.stats.decided += 1

    async def _decide(self, vm: str, req: p.ScanRequest, fetch: FetchContent) -> Decision:
        if req.kind == "prefetch":
            self.stats.prefetches[vm] += 1
        else:
            self.stats.requests[vm] += 1
        profile = self.profile(vm)
        if not profile.protected:
            # The center does not protect this VM: allowed at once, unscanned. Not "clean": the
            # agent caches only clean (and too-big) verdicts, and nothing goes in our cache.
            self.stats.unprotected[vm] += 1
            return Decision(
                p.Verdict(
                    id=req.id,
                    status=UNPROTECTED,
                    action="allow",
                    db_version=self.db_version,
                    reason=f"file protection: {profile.protection} by the center",
                )
            )
        db = self.db_version
        content: bytes | None = None
        if not req.sha256:  # not hashed by the agent: only allowed for a file over the limit
            if req.size <= MAX_ONACCESS_SIZE:
                return self._failure(req, f"{req.path}: no hash for a scannable file", profile)
            big = CachedResult("limits_exceeded", (), "max_file_size", req.size)
            return await self._act(vm, req, profile, big, False, None, fetch)
        result = self.cache.get(req.sha256, db)
        cached = result is not None
        if result is None:
            if req.size > MAX_ONACCESS_SIZE:
                result = CachedResult("limits_exceeded", (), "max_file_size", req.size)
            else:
                try:
                    result, content = await self._scan_once(vm, req, fetch, db)
                except Busy as exc:
                    self.stats.busy += 1
                    return self._failure(req, f"svm busy: {exc}", profile)
                except ContentMismatch as exc:
                    self.stats.content_mismatch += 1
                    return self._failure(req, str(exc), profile, status="error")
        else:
            self.stats.cache_hits += 1
        if req.kind == "prefetch":
            # The agent reads ahead of a guest walking a directory: it only wants to know whether
            # the file is clean. Actions and events wait for a real access (answered from cache).
            return Decision(
                p.Verdict(
                    id=req.id,
                    status=result.status,
                    action="allow" if result.status == "clean" else "deny",
                    db_version=self.db_version,
                    cached=cached,
                )
            )
        return await self._act(vm, req, profile, result, cached, content, fetch)

    def _failure(
        self, req: p.ScanRequest, reason: str, profile: Profile, status: str = "error"
    ) -> Decision:
        action: p.Action = "allow" if profile.failure_mode == "open" else "deny"
        return Decision(
            p.Verdict(
                id=req.id, status=status, action=action, db_version=self.db_version, reason=reason
            )
        )

    async def _scan_once(
        self, vm: str, req: p.ScanRequest, fetch: FetchContent, db: str
    ) -> tuple[CachedResult, bytes | None]:
        key = (req.sha256, db)
        running = self._inflight.get(key)
        if running is not None:
            # Another VM (or this one) is scanning the same content: share its result.
            return await asyncio.shield(running), None
        fut: asyncio.Future[CachedResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            await self.slots.acquire(vm)
            try:
                content = await self._fetch_checked(req, fetch)
                t0 = time.perf_counter()
                raw = await self.pool.scan(content, req.path)
                self.stats.worker_s += time.perf_counter() - t0
            finally:
                self.slots.release(vm)
            result = CachedResult(
                status=str(raw.get("status", "error")),
                detections=tuple(
                    (str(d.get("name", "")), str(d.get("inner_path", "")))
                    for d in raw.get("detections") or ()
                ),
                limit=raw.get("limit"),
                size=len(content),
            )
            self.stats.scans += 1
            self.stats.scanned_bytes += len(content)
            if result.status != "error":
                self.cache.put(req.sha256, db, result)
            fut.set_result(result)
            return result, content
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                fut.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            self._inflight.pop(key, None)

    async def _fetch_checked(self, req: p.ScanRequest, fetch: FetchContent) -> bytes:
        content = await fetch()
        if len(content) != req.size or hashlib.sha256(content).hexdigest() != req.sha256:
            raise ContentMismatch(
                f"{req.path}: content sent ({len(content)} bytes) does not match the announced size/hash"
            )
        return content

    async def _act(
        self,
        vm: str,
        req: p.ScanRequest,
        profile: Profile,
        result: CachedResult,
        cached: bool,
        content: bytes | None,
        fetch: FetchContent,
    ) -> Decision:
        dets = [
            p.Detection(name=n[: p.MAX_NAME], inner_path=i[: p.MAX_PATH])
            for n, i in result.detections
        ][: p.MAX_DETECTIONS]
        base: dict[str, Any] = {
            "id": req.id,
            "status": result.status,
            "db_version": self.db_version,
            "detections": dets,
            "cached": cached,
        }
        if result.status == "clean":
            return Decision(p.Verdict(action="allow", **base))
        if result.status != "infected":
            action: p.Action = "allow" if profile.unscannable == "allow" else "deny"
            self._event(vm, req, result, "file", action, SEVERITY_MEDIUM)
            return Decision(p.Verdict(action=action, reason=result.limit or result.status, **base))
        self.stats.detections += 1
        action = profile.action  # type: ignore[assignment]
        replacement: bytes | None = None
        backup_id = ""
        if action in ("disinfect", "quarantine", "delete"):
            try:
                if content is None:  # answered from the cache: the backup needs the bytes
                    await self.slots.acquire(vm)  # content in memory only within the fair slots
                    try:
                        content = await self._fetch_checked(req, fetch)
                    finally:
                        self.slots.release(vm)
                backup_id = await asyncio.to_thread(
                    self.backup.put,
                    content,
                    {
                        "vm": vm,
                        "path": req.path,
                        "action": action,
                        "host": self.config.host,
                        "detections": [d.name for d in dets],
                    },
                )
            except Exception as exc:  # no backup: never destroy the file, deny instead
                log.warning("backup of %s from %s failed: %s", req.path, vm, exc)
                action = "deny"
            if action == "disinfect" and content is not None:
                inner = [d.inner_path for d in dets]
                replacement = await self.pool.disinfect(content, req.path, inner)
                if replacement is None:
                    action = profile.fallback  # type: ignore[assignment]  # cannot be cleaned
        self._event(vm, req, result, "file", action, SEVERITY_HIGH, backup_id=backup_id)
        return Decision(p.Verdict(action=action, **base), replacement)

    def _event(
        self,
        vm: str,
        req: p.ScanRequest,
        result: CachedResult,
        etype: str,
        action: str,
        sev: int,
        **extra: Any,
    ) -> None:
        data: dict[str, Any] = {
            "file": {
                "path": req.path,
                "sha256": req.sha256,
                "size": req.size,
                "access": req.kind,
                "status": result.status,
                "detections": [{"name": n, "inner_path": i} for n, i in result.detections],
                "limit": result.limit,
                "db_version": self.db_version,
            },
            "action": action,
        }
        if extra.get("backup_id"):
            data["backup_id"] = extra["backup_id"]
        try:
            self.emit(
                Event(event_type=etype, host=self.config.host, vm=vm, severity=sev, data=data)
            )
        except Exception as exc:  # events must not break verdicts; the sink reports its own loss
            log.error("event sink failed: %s", exc)

    def health(self) -> dict[str, Any]:
        return {
            "db_version": self.db_version,
            "workers": self.pool.workers,
            "worker_restarts": self.pool.restarts,
            "running": self.slots.running,
            "waiting": self.slots.waiting,
            "scans": self.stats.scans,
            "scanned_bytes": self.stats.scanned_bytes,
            "cache_entries": len(self.cache),
            "cache_hits": self.stats.cache_hits,
            "detections": self.stats.detections,
            "busy": self.stats.busy,
            "content_mismatch": self.stats.content_mismatch,
            "requests_per_vm": dict(self.stats.requests),
            "prefetches_per_vm": dict(self.stats.prefetches),
            "unprotected_per_vm": dict(self.stats.unprotected),
            "mean_decide_ms": round(1000 * self.stats.decide_s / max(self.stats.decided, 1), 3),
            "mean_worker_ms": round(1000 * self.stats.worker_s / max(self.stats.scans, 1), 3),
            "center_version": self.config.center_version,
            "center_vms": len(self.config.center_profiles),
        }

    def close(self) -> None:
        self.pool.close()
