"""The thin agent: fanotify interception, clean-verdict caches, failure modes, enforcement.

Every permission event is answered exactly once, within the deadline: by the caches, by the
verdict, or by the failure mode when the verdict is late or the service unreachable — and, on
shutdown or an unexpected error, by the `finally` of its handler. The agent's own process (and the
configured processes and paths) are allowed at once: the agent opens files it watches (rescans,
on-demand scans, writing disinfected content) and must never wait for itself.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fnmatch
import hashlib
import logging
import os
import re
import stat
import tomllib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from vmshield.agent import fanotify as fan
from vmshield.agent import inotify, vminfo
from vmshield.agent.client import AgentClient, ClientHooks, Unreachable
from vmshield.transport import protocol as p
from vmshield.transport.endpoints import parse_endpoint

log = logging.getLogger("vmshield.agent")

PREFETCH_MAX_SIZE = 1024 * 1024  # read-ahead only for files this small
PREFETCH_INFLIGHT = 4  # read-ahead requests in flight (the window keeps room for real ones)
PREFETCH_QUEUE = 256  # read-ahead tasks waiting, all directories
PREFETCH_LISTING = 20_000  # names of one directory kept for read-ahead (the first, sorted)
PREFETCH_DIRS = 8  # directories whose listing is kept (memory: at most 160 000 names)
INLINE_HASH = 256 * 1024  # smaller files are hashed on the event loop (cheaper than a thread hop)
MAX_PENDING_EVENTS = 4096
MAX_RESCAN = 10_000
CACHEABLE = ("clean", "limits_exceeded", "encrypted")
FORBIDDEN_MARKS = (
    "/",
    "/usr",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/boot",
    "/proc",
    "/sys",
    "/dev",
)


class ConfigError(ValueError):
    pass


class Matcher:
    """Globs (`glob:` or bare) and regular expressions (`re:`); a bad pattern is named."""

    def __init__(self, patterns: list[str], what: str, lenient: bool = False) -> None:
        self.globs: list[str] = []
        self.res: list[re.Pattern[str]] = []
        for pat in patterns:
            if pat.startswith("re:"):
                try:
                    self.res.append(re.compile(pat[3:]))
                except re.error as exc:
                    if not lenient:
                        msg = f"{what}: bad regular expression {pat[3:]!r}: {exc}"
                        raise ConfigError(msg) from None
                    log.error("%s: ignoring bad regular expression %r: %s", what, pat[3:], exc)
            else:
                self.globs.append(pat[5:] if pat.startswith("glob:") else pat)

    def __call__(self, text: str) -> bool:
        return any(fnmatch.fnmatchcase(text, g) for g in self.globs) or any(
            r.search(text) for r in self.res
        )

    def __bool__(self) -> bool:
        return bool(self.globs or self.res)


@dataclass
class AgentConfig:
    endpoint: str = "vsock://host:7470"
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    server_name: str = ""
    paths: list[str] = field(default_factory=list)  # directory trees (each directory marked)
    mounts: list[str] = field(default_factory=list)  # whole mounts (FAN_MARK_MOUNT)
    # Whole filesystems (FAN_MARK_FILESYSTEM): every mount of it, in every mount namespace.
    filesystems: list[str] = field(default_factory=list)
    exclude_paths: list[str] = field(default_factory=list)
    exclude_processes: list[str] = field(default_factory=list)  # executable paths or comm names
    exclude_pids: list[int] = field(default_factory=list)
    deadline: float = 3.0
    failure_mode: str = "open"
    on_access: list[str] = field(default_factory=lambda: ["open", "exec", "close_write"])
    machine_id: str = ""
    dmi_uuid: str = ""
    hostname: str = ""
    rewalk_interval: float = 30.0  # seconds between walks that mark new directories (paths mode)
    info_interval: float = 60.0
    allow_system_paths: bool = False
    connect_wait: float = 5.0  # at start, how long "ready" waits for the first connection
    # Read-ahead: after a cold open, the next files of that directory (sorted by name, as most
    # tree walkers read) are checked in the background, so a guest walking a tree mostly finds
    # them already cleared. 0 disables it.
    prefetch: int = 16

    @classmethod
    def load(cls, path: str | Path) -> AgentConfig:
        try:
            with open(path, "rb") as f:
                obj = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        body = obj.get("agent", obj)
        cfg = cls()
        for key, value in body.items():
            if not hasattr(cfg, key):
                raise ConfigError(f"{path}: unknown key agent.{key}")
            setattr(cfg, key, value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        parse_endpoint(self.endpoint)
        if self.failure_mode not in ("open", "closed"):
            raise ConfigError(f"failure_mode {self.failure_mode!r}: expected open or closed")
        if not 0 <= int(self.prefetch) <= 256:
            raise ConfigError(f"prefetch {self.prefetch}: outside 0..256 files")
        if not 0.05 <= float(self.deadline) <= 600:
            raise ConfigError(f"deadline {self.deadline}: outside 0.05..600 seconds")
        if not self.paths and not self.mounts and not self.filesystems:
            raise ConfigError("nothing to protect: set paths, mounts or filesystems")
        for pth in [*self.paths, *self.mounts, *self.filesystems]:
            real = os.path.realpath(pth)
            if not os.path.isdir(real):
                raise ConfigError(f"{pth}: not a directory")
            if not self.allow_system_paths and (real in FORBIDDEN_MARKS or real == "/tmp"):
                raise ConfigError(
                    f"{pth}: refusing to block {real} itself (set allow_system_paths)"
                )
        for pth in [*self.mounts, *self.filesystems]:
            if not os.path.ismount(pth):
                raise ConfigError(f"{pth}: not a mount point (use paths for a directory tree)")
        if not self.allow_system_paths:
            # A filesystem mark on the root or /tmp filesystem would block the whole system.
            system = {os.stat(x).st_dev for x in ("/", "/tmp", "/usr", "/etc") if os.path.exists(x)}
            for pth in self.filesystems:
                if os.stat(pth).st_dev in system:
                    raise ConfigError(f"{pth}: on a system filesystem; refusing a filesystem mark")
        Matcher(self.exclude_paths, "exclude_paths")
        Matcher(self.exclude_processes, "exclude_processes")


def file_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class AgentStats:
    events: int = 0
    permission_events: int = 0
    own_events: int = 0
    excluded: int = 0
    cache_hits: int = 0
    requests: int = 0
    allowed: int = 0
    denied: int = 0
    failure_answers: int = 0
    overflow: int = 0
    enforced: int = 0
    enforce_failed: int = 0
    rescanned: int = 0
    prefetched: int = 0  # files checked ahead of a directory walk
    unhashed: int = 0  # over the SVM's size limit: asked about without reading them


class Agent:
    def __init__(self, cfg: AgentConfig, tls: object | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.deadline = float(cfg.deadline)
        self.failure_mode = cfg.failure_mode
        self.kinds = set(cfg.on_access)
        self.db_version = ""
        self.cache: OrderedDict[tuple[int, int, int, int, int], str] = OrderedDict()
        self.cache_max = 100_000
        self.exclude_path = Matcher(cfg.exclude_paths, "exclude_paths")
        self.exclude_proc = Matcher(cfg.exclude_processes, "exclude_processes")
        self.own_pids = {os.getpid(), *cfg.exclude_pids}
        self._proc_cache: dict[int, bool] = {}
        self.stats = AgentStats()
        self.fan_fd = -1
        self.rescan: dict[str, None] = {}
        self._fail_reported = False
        self._fail_count = 0
        self._fail_detail = ""
        self._pending: set[asyncio.Task[None]] = set()
        self._pending_misc: set[asyncio.Future[None]] = set()
        self._info = vminfo.collect(cfg.machine_id, cfg.dmi_uuid, cfg.hostname)
        self.client = AgentClient(
            parse_endpoint(cfg.endpoint),
            self._hello,
            ClientHooks(self._on_welcome, self._on_db, self._on_order, self._on_disconnect),
            tls=tls,  # type: ignore[arg-type]
            server_hostname=cfg.server_name or None,
        )
        self._marked_dirs: set[str] = set()
        # read-ahead state: directory -> (sorted names, names already checked or scheduled)
        self._ahead: OrderedDict[str, tuple[list[str], set[str]]] = OrderedDict()
        self._ahead_tasks: set[asyncio.Task[None]] = set()
        self._ahead_slots = asyncio.Semaphore(PREFETCH_INFLIGHT)
        self.in_fd = -1
        self._wd_paths: dict[int, str] = {}
        self._inotify_warned = False

    # ------------------------------------------------------------------ protocol hooks
    def _hello(self) -> p.Hello:
        return p.Hello(versions=list(p.PROTOCOL_VERSIONS), info=self._info, token=self.cfg.token)

    async def _on_welcome(self, w: p.Welcome) -> None:
        self.deadline, self.failure_mode = w.deadline, w.failure_mode
        # The profile's exclusions add to the local ones.
        self.exclude_path = Matcher(
            self.cfg.exclude_paths + w.exclude_paths, "exclude_paths", lenient=True
        )
        self.exclude_proc = Matcher(
            self.cfg.exclude_processes + w.exclude_processes, "exclude_processes", lenient=True
        )
        self._proc_cache.clear()
        kinds = set(w.on_access) or self.kinds
        if kinds != self.kinds:
            self.kinds = kinds
            self._remark()
        if w.db_version != self.db_version:
            self._on_db(w.db_version)
        t = asyncio.ensure_future(self._after_welcome())
        self._pending_misc.add(t)
        t.add_done_callback(self._pending_misc.discard)

    async def _after_welcome(self) -> None:
        if self._fail_reported:
            self._fail_reported = False
            # Notices sent while disconnected were lost: report the episode now.
            await self._notice(f"fail_{self.failure_mode}", self._fail_count, self._fail_detail)  # type: ignore[arg-type]
            await self._notice("recovered", len(self.rescan), "verdicts available again")
            self._fail_count = 0
        if self.rescan:
            await self._rescan()

    def _on_disconnect(self) -> None:
        log.warning("introspection service unreachable; failure mode is fail-%s", self.failure_mode)

    def _on_db(self, version: str) -> None:
        """New signature database: no clean verdict of the old one is trusted any more."""
        changed = bool(self.db_version) and version != self.db_version
        self.db_version = version
        self.cache.clear()
        if changed and self.fan_fd >= 0:
            self._remark()

    async def _notice(self, state: str, count: int = 0, detail: str = "") -> None:
        with contextlib.suppress(Exception):
            await self.client.send(p.Notice(state=state, count=count, detail=detail[:1000]))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ marks
    def _mask(self) -> int:
        m = 0
        if "open" in self.kinds:
            m |= fan.FAN_OPEN_PERM
        if "exec" in self.kinds:
            m |= fan.FAN_OPEN_EXEC_PERM
        if "close_write" in self.kinds:
            m |= fan.FAN_CLOSE_WRITE
        return m

    def _add_marks(self) -> None:
        mask = self._mask()
        for mnt in self.cfg.mounts:
            fan.mark(self.fan_fd, fan.FAN_MARK_ADD | fan.FAN_MARK_MOUNT, mask, mnt)
        for fs in self.cfg.filesystems:
            fan.mark(self.fan_fd, fan.FAN_MARK_ADD | fan.FAN_MARK_FILESYSTEM, mask, fs)
        self._marked_dirs.clear()
        self._mark_new_dirs()

    def _mark_new_dirs(self, tops: list[str] | None = None) -> int:
        mask = self._mask() | fan.FAN_EVENT_ON_CHILD
        added = 0
        for top in self.cfg.paths if tops is None else tops:
            for dirpath, dirnames, _files in os.walk(top):
                dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
                if dirpath in self._marked_dirs:
                    continue
                try:
                    fan.mark(self.fan_fd, fan.FAN_MARK_ADD | fan.FAN_MARK_ONLYDIR, mask, dirpath)
                    self._marked_dirs.add(dirpath)
                    added += 1
                except OSError as exc:
                    log.warning("cannot watch %s: %s", dirpath, exc)
                    continue
                self._watch_dir(dirpath)
        return added

    def _watch_dir(self, path: str) -> None:
        if self.in_fd < 0:
            return
        try:
            wd = inotify.add_watch(self.in_fd, path)
        except OSError as exc:  # e.g. max_user_watches: the periodic walk still finds it
            if not self._inotify_warned:
                self._inotify_warned = True
                log.warning("new directories are found by the periodic walk only: %s", exc)
            return
        self._wd_paths[wd] = path

    def _on_dir_event(self) -> None:
        """A directory appeared under a watched tree: mark it (and what it holds) now."""
        new: list[str] = []
        for wd, mask, name in inotify.read_events(self.in_fd):
            if mask & inotify.IN_Q_OVERFLOW:
                new += self.cfg.paths  # lost events: walk everything again
            elif mask & inotify.IN_IGNORED:
                gone = self._wd_paths.pop(wd, None)
                if gone is not None:
                    self._marked_dirs.discard(gone)
            elif mask & inotify.IN_ISDIR and name and wd in self._wd_paths:
                new.append(os.path.join(self._wd_paths[wd], name))
        if new:
            self._mark_new_dirs(new)

    def _remark(self) -> None:
        """Drop every kernel ignore mark and re-add the watches (with the current mask)."""
        with contextlib.suppress(OSError):
            fan.mark(self.fan_fd, fan.FAN_MARK_FLUSH, 0, "/")
        # Mount and filesystem marks are flushed too: the mask may have changed. The gap is the
        # time of a few fanotify_mark calls.
        if self.cfg.mounts:
            with contextlib.suppress(OSError):
                fan.mark(self.fan_fd, fan.FAN_MARK_FLUSH | fan.FAN_MARK_MOUNT, 0, "/")
        if self.cfg.filesystems:
            with contextlib.suppress(OSError):
                fan.mark(self.fan_fd, fan.FAN_MARK_FLUSH | fan.FAN_MARK_FILESYSTEM, 0, "/")
        self._add_marks()

    # ------------------------------------------------------------------ events
    def _excluded_process(self, pid: int) -> bool:
        if not self.exclude_proc:
            return False
        hit = self._proc_cache.get(pid)
        if hit is None:
            exe = ""
            with contextlib.suppress(OSError):
                exe = os.readlink(f"/proc/{pid}/exe")
            comm = ""
            with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            hit = bool((exe and self.exclude_proc(exe)) or (comm and self.exclude_proc(comm)))
            if len(self._proc_cache) > 4096:
                self._proc_cache.clear()
            self._proc_cache[pid] = hit
        return hit

    def _on_readable(self) -> None:
        try:
            events = fan.read_events(self.fan_fd)
        except OSError as exc:
            log.error("reading fanotify events: %s", exc)
            return
        for ev in events:
            self.stats.events += 1
            if ev.fd < 0:  # FAN_Q_OVERFLOW: events were lost; say so
                self.stats.overflow += 1
                asyncio.ensure_future(
                    self._notice("overflow", self.stats.overflow, "fanotify queue overflow")
                )
                continue
            perm = ev.is_permission
            if perm:
                self.stats.permission_events += 1
            if ev.pid in self.own_pids:
                self.stats.own_events += 1
                self._answer(ev, True)
                continue
            if len(self._pending) >= MAX_PENDING_EVENTS:
                self._answer(ev, self.failure_mode == "open")
                self.stats.failure_answers += 1
                continue
            t = asyncio.ensure_future(self._handle(ev))
            self._pending.add(t)
            t.add_done_callback(self._pending.discard)

    def _answer(self, ev: fan.FanEvent, allow: bool) -> None:
        try:
            if ev.is_permission:
                fan.respond(self.fan_fd, ev.fd, allow)
                if allow:
                    self.stats.allowed += 1
                else:
                    self.stats.denied += 1
        except OSError as exc:
            log.error("answering fanotify event: %s", exc)
        finally:
            os.close(ev.fd)

    async def _handle(self, ev: fan.FanEvent) -> None:
        allow = True
        try:
            if ev.is_permission:
                kind: p.EventKind = "exec" if ev.mask & fan.FAN_OPEN_EXEC_PERM else "open"
                try:
                    allow = await asyncio.wait_for(self._decide(ev, kind), self.deadline)
                except (TimeoutError, Unreachable, OSError) as exc:
                    allow = await self._fail(ev, exc)
            elif ev.mask & fan.FAN_CLOSE_WRITE:
                try:
                    await self._decide(ev, "close_write")
                except (Unreachable, OSError) as exc:
                    self._queue_rescan(fan.fd_path(ev.fd))
                    log.info("scan after save deferred: %s", exc)
        except asyncio.CancelledError:
            allow = self.failure_mode == "open"
            raise
        except Exception:
            log.exception("handling a fanotify event")
            allow = self.failure_mode == "open"
        finally:
            self._answer(ev, allow)  # exactly once, whatever happened above

    async def _fail(self, ev: fan.FanEvent, exc: BaseException) -> bool:
        self.stats.failure_answers += 1
        allow = self.failure_mode == "open"
        path = fan.fd_path(ev.fd)
        if allow:
            self._queue_rescan(path)
        self._fail_count += 1
        if not self._fail_reported:
            self._fail_reported = True
            reason = "verdict late" if isinstance(exc, asyncio.TimeoutError) else f"{exc}"
            self._fail_detail = f"{path}: {reason}"
            log.warning("fail-%s: %s", self.failure_mode, self._fail_detail)
            asyncio.ensure_future(self._notice(f"fail_{self.failure_mode}", 1, self._fail_detail))  # type: ignore[arg-type]
        return allow

    def _queue_rescan(self, path: str) -> None:
        if path and len(self.rescan) < MAX_RESCAN:
            self.rescan[path] = None

    async def _decide(self, ev: fan.FanEvent, kind: p.EventKind) -> bool:
        """True to allow. Raises Unreachable/TimeoutError for the failure mode to decide."""
        st = os.fstat(ev.fd)
        if not stat.S_ISREG(st.st_mode):
            return True
        path = fan.fd_path(ev.fd)
        if self.exclude_path and self.exclude_path(path):
            self.stats.excluded += 1
            return True
        if self._excluded_process(ev.pid):
            self.stats.excluded += 1
            return True
        key = file_key(st)
        if self.db_version and self.cache.get(key) == self.db_version:
            self.stats.cache_hits += 1
            if ev.is_permission:
                self._ignore(ev.fd)
            return True
        if kind == "open" and self.cfg.prefetch and st.st_size <= PREFETCH_MAX_SIZE:
            self._read_ahead(path)
        verdict, replacement = await self._ask(ev.fd, path, st, kind)
        if verdict.action == "allow" or verdict.action == "report":
            # Cache what the same content and database will always get again (clean, or allowed
            # although too big/encrypted to scan), and only if the file did not change meanwhile.
            if (
                verdict.action == "allow"
                and verdict.status in CACHEABLE
                and verdict.db_version == self.db_version
                and file_key(os.fstat(ev.fd)) == key
            ):
                self._remember(key)
                self._ignore(ev.fd)
            return True
        await self._enforce(verdict, replacement, ev.fd, path, st)
        return False

    async def _ask(
        self, fd: int, path: str, st: os.stat_result, kind: p.EventKind, order: int = 0
    ) -> tuple[p.Verdict, bytes | None]:
        self.stats.requests += 1
        inline: bytes | None = None
        w = self.client.welcome
        if w is not None and 0 < w.max_size < st.st_size:
            # The SVM will not scan it: ask without reading (hashing 10 GB would hold the open).
            self.stats.unhashed += 1
            digest = ""
        elif st.st_size <= INLINE_HASH:
            data = os.pread(fd, st.st_size + 1, 0)[: st.st_size]
            digest = hashlib.sha256(data).hexdigest()
            if len(data) == st.st_size and st.st_size <= p.INLINE_MAX:
                inline = data  # a cache miss then needs no content round trip
        else:
            dup = os.dup(fd)
            try:
                digest = await asyncio.to_thread(_hash_fd, dup)
            finally:
                os.close(dup)
        answer = await self.client.request(path, digest, st.st_size, kind, fd, order, inline)
        if self._fail_reported and self.client.connected.is_set():
            self._fail_reported = False  # verdicts arrive in time again
            asyncio.ensure_future(
                self._notice("recovered", self._fail_count, "verdicts in time again")
            )
            self._fail_count = 0
        return answer

    def _remember(self, key: tuple[int, int, int, int, int]) -> None:
        self.cache[key] = self.db_version
        if len(self.cache) > self.cache_max:
            self.cache.popitem(last=False)

    def _ignore(self, fd: int) -> None:
        mask = (fan.FAN_OPEN_PERM | fan.FAN_OPEN_EXEC_PERM) & self._mask()
        if mask:
            with contextlib.suppress(OSError):
                fan.ignore_fd(self.fan_fd, fd, mask)

    # ------------------------------------------------------------------ enforcement
    async def _enforce(
        self, verdict: p.Verdict, replacement: bytes | None, fd: int, path: str, st: os.stat_result
    ) -> None:
        action = verdict.action
        if action not in ("quarantine", "delete", "disinfect"):
            return  # deny: the access is refused, nothing else
        try:
            await asyncio.to_thread(_apply, action, replacement, path, st)
            self.stats.enforced += 1
            log.warning("%s: %s (%s)", path, action, ", ".join(d.name for d in verdict.detections))
        except OSError as exc:
            self.stats.enforce_failed += 1
            await self._notice("enforce_failed", 1, f"{path}: {action}: {exc}")

    # ------------------------------------------------------------------ read-ahead
    def _read_ahead(self, path: str) -> None:
        if len(self._ahead_tasks) >= PREFETCH_QUEUE:
            return  # bounded: under a storm of cold opens, read-ahead simply stops
        t = asyncio.ensure_future(self._schedule_ahead(path))
        self._ahead_tasks.add(t)
        t.add_done_callback(self._ahead_tasks.discard)

    async def _schedule_ahead(self, path: str) -> None:
        directory, name = os.path.split(path)
        entry = self._ahead.get(directory)
        if entry is None:
            try:
                names = sorted(await asyncio.to_thread(os.listdir, directory))
            except OSError:
                return
            entry = self._ahead[directory] = (names[:PREFETCH_LISTING], set())
            while len(self._ahead) > PREFETCH_DIRS:
                self._ahead.popitem(last=False)
        else:
            self._ahead.move_to_end(directory)
        names, done = entry
        done.add(name)
        i = bisect.bisect_right(names, name)
        for nxt in names[i : i + int(self.cfg.prefetch)]:
            if nxt in done or len(self._ahead_tasks) >= PREFETCH_QUEUE:
                continue
            done.add(nxt)
            t = asyncio.ensure_future(self._prefetch(os.path.join(directory, nxt)))
            self._ahead_tasks.add(t)
            t.add_done_callback(self._ahead_tasks.discard)

    async def _prefetch(self, path: str) -> None:
        async with self._ahead_slots:
            if self.exclude_path and self.exclude_path(path):
                return
            try:
                st = os.lstat(path)  # no permission event: only opens are intercepted
                if not stat.S_ISREG(st.st_mode) or st.st_size > PREFETCH_MAX_SIZE:
                    return
                if self.db_version and self.cache.get(file_key(st)) == self.db_version:
                    return
                fd = await asyncio.to_thread(_open_quietly, path)
            except OSError:
                return
            try:
                st = os.fstat(fd)
                key = file_key(st)
                verdict, _ = await asyncio.wait_for(
                    self._ask(fd, path, st, "prefetch"), self.deadline
                )
                self.stats.prefetched += 1
                if (
                    verdict.status == "clean"
                    and verdict.db_version == self.db_version
                    and file_key(os.fstat(fd)) == key
                ):
                    self._remember(key)
                    self._ignore(fd)
            except (Unreachable, TimeoutError, OSError):
                pass  # read-ahead is best effort: the real open asks again
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ rescans and on-demand scans
    async def _scan_path(self, path: str, kind: p.EventKind, order: int = 0) -> p.Verdict | None:
        try:
            # Never open a watched file on the event loop: our own open raises a permission event
            # that only this loop can answer.
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            verdict, replacement = await self._ask(fd, path, st, kind, order)
            if verdict.status == "clean" and verdict.db_version == self.db_version:
                self._remember(file_key(st))
            elif verdict.action in ("quarantine", "delete", "disinfect"):
                await self._enforce(verdict, replacement, fd, path, st)
            return verdict
        finally:
            os.close(fd)

    async def _rescan(self) -> None:
        paths, self.rescan = list(self.rescan), {}
        done = 0
        for path in paths:
            try:
                await self._scan_path(path, "rescan")
                done += 1
            except (Unreachable, OSError):
                self._queue_rescan(path)
        self.stats.rescanned += done
        if done:
            await self._notice("rescanned", done, "files allowed while verdicts were unavailable")

    async def _on_order(self, order: p.ScanOrder) -> None:
        files = 0
        sem = asyncio.Semaphore(16)
        error = ""

        async def one(path: str) -> None:
            async with sem:
                with contextlib.suppress(OSError):
                    await self._scan_path(path, "ondemand", order.order)

        tasks: set[asyncio.Task[None]] = set()
        try:
            for top in order.paths:
                if not os.path.isabs(top) or not os.path.exists(top):
                    error = f"{top}: no such file or directory"
                    continue
                walker = [(top, [], [""])] if os.path.isfile(top) else os.walk(top)
                for dirpath, _dirs, names in walker:
                    for name in names:
                        full = os.path.join(dirpath, name) if name else dirpath
                        if self.exclude_path and self.exclude_path(full):
                            continue
                        files += 1
                        t = asyncio.ensure_future(one(full))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                        if files % 100 == 0:
                            await self.client.send(p.OrderProgress(order=order.order, files=files))
                        while len(tasks) >= 64:
                            await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
            if tasks:
                await asyncio.wait(set(tasks))
            await self.client.send(
                p.OrderProgress(order=order.order, files=files, done=True, error=error)
            )
        except Unreachable:
            pass

    # ------------------------------------------------------------------ main loop
    async def _info_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.info_interval)
            info = vminfo.collect(self.cfg.machine_id, self.cfg.dmi_uuid, self.cfg.hostname)
            if info != self._info:
                self._info = info
                with contextlib.suppress(Exception):
                    await self.client.send(p.InfoUpdate(info=info))

    async def _rewalk_loop(self, stop: asyncio.Event) -> None:
        while self.cfg.paths and not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.rewalk_interval)
            if not stop.is_set():
                await asyncio.to_thread(self._mark_new_dirs)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.fan_fd = fan.init(
            fan.FAN_CLASS_CONTENT | fan.FAN_CLOEXEC | fan.FAN_NONBLOCK | fan.FAN_UNLIMITED_QUEUE
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.cfg.paths:
                self.in_fd = inotify.init()
                loop.add_reader(self.in_fd, self._on_dir_event)
            self._add_marks()
            loop.add_reader(self.fan_fd, self._on_readable)
            tasks = [
                asyncio.create_task(self.client.run(stop)),
                asyncio.create_task(self._info_loop(stop)),
                asyncio.create_task(self._rewalk_loop(stop)),
            ]
            if ready is not None:
                # Ready once the marks are in place and the service answered (or a short wait).
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.client.connected.wait(), self.cfg.connect_wait)
                ready.set()
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.fan_fd)
            for t in tasks:
                t.cancel()
            for t in list(self._pending):
                t.cancel()  # each handler's finally answers its event
            if self._pending:
                await asyncio.wait(set(self._pending), timeout=5.0)
            # Events still queued in the kernel: answer them before the group goes away.
            with contextlib.suppress(OSError):
                for ev in fan.read_events(self.fan_fd):
                    if ev.fd >= 0:
                        self._answer(ev, self.failure_mode == "open")
            os.close(self.fan_fd)  # closing the group removes every mark
            self.fan_fd = -1
            if self.in_fd >= 0:
                with contextlib.suppress(Exception):
                    loop.remove_reader(self.in_fd)
                os.close(self.in_fd)
                self.in_fd = -1


def _open_quietly(path: str) -> int:
    """Open for read-ahead without touching the file's access time (a guest did not read it)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        return os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:  # O_NOATIME needs the owner or CAP_FOWNER
        return os.open(path, flags)


def _hash_fd(fd: int) -> str:
    h = hashlib.sha256()
    off = 0
    while True:
        chunk = os.pread(fd, 1 << 20, off)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)
        off += len(chunk)


def _same_file(path: str, st: os.stat_result) -> bool:
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _apply(action: str, replacement: bytes | None, path: str, st: os.stat_result) -> None:
    """Carry out the SVM's action on `path` — only if it is still the file that was scanned."""
    if not _same_file(path, st):
        raise OSError(f"{path} changed before {action} could be applied")
    if action in ("quarantine", "delete"):
        os.unlink(path)  # the SVM holds the backup copy (quarantine) before it says so
        return
    if action == "disinfect":
        if replacement is None:
            raise OSError("disinfect without replacement content")
        d, base = os.path.split(path)
        tmp = os.path.join(d, f".{base}.vmshield-{os.getpid()}.tmp")
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, stat.S_IMODE(st.st_mode)
        )
        try:
            view = memoryview(replacement)
            while view:
                view = view[os.write(fd, view) :]
            with contextlib.suppress(OSError):
                os.fchown(fd, st.st_uid, st.st_gid)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)  # atomic: readers see the old file or the clean one, never half
