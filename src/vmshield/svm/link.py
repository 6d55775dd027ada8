"""The SVM and the introspection service in separate processes (or machines).

`SvmLinkServer` runs in `vmshield svm --relay-listen EP`: it serves scan requests relayed by an
introspection service, fetching content from it on a cache miss, exactly like the in-process path.
`RemoteScanService` runs in `vmshield introspection run --svm EP`: it offers the relay the same
interface as `ScanService` (decide, profile, events, database changes) over one framed connection
with many requests in flight, and reconnects with backoff. A Unix endpoint is protected by its
file mode (0600); a TCP endpoint uses mutual TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from vmshield.events import Event, eve_line
from vmshield.svm.config import Profile
from vmshield.svm.service import Decision, ScanService
from vmshield.transport import protocol as p
from vmshield.transport.endpoints import Endpoint, open_connection
from vmshield.transport.stream import Connection

log = logging.getLogger("vmshield.svm.link")
CONTENT_TIMEOUT = 60.0


# ---------------------------------------------------------------------- SVM side
class SvmLinkServer:
    def __init__(self, svc: ScanService) -> None:
        self.svc = svc
        self.links: set[Connection] = set()
        svc.on_db_change(self._broadcast)

    def _broadcast(self, version: str) -> None:
        for conn in list(self.links):
            asyncio.ensure_future(_send_quiet(conn, p.DbVersion(db_version=version)))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
        pending: dict[int, tuple[bytearray, asyncio.Future[bytes], int]] = {}
        tasks: set[asyncio.Task[None]] = set()
        try:
            hello = await asyncio.wait_for(conn.recv(), 10)
            if not isinstance(hello, p.RelayHello):
                raise p.ProtocolError("the first message must be relay_hello")
            version = p.negotiate(hello.versions)
            await conn.send(
                p.SvmWelcome(
                    version=version, db_version=self.svc.db_version, host=self.svc.config.host
                )
            )
            self.links.add(conn)
            while True:
                msg = await conn.recv()
                if msg is None:
                    return
                if isinstance(msg, p.RelayScan):
                    t = asyncio.create_task(self._scan(conn, msg, pending))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                elif isinstance(msg, p.Content):
                    entry = pending.get(msg.id)
                    if entry is None:
                        continue  # the scan was abandoned
                    buf, fut, size = entry
                    if msg.offset != len(buf) or len(buf) + len(msg.data) > size:
                        raise p.ProtocolError(f"content for {msg.id} out of order or too long")
                    buf += msg.data
                    if msg.final and not fut.done():
                        fut.set_result(bytes(buf))
                elif isinstance(msg, p.ProfileRequest):
                    prof = self.svc.profile(msg.vm)
                    await conn.send(
                        p.ProfileInfo(
                            vm=msg.vm,
                            failure_mode=prof.failure_mode,  # type: ignore[arg-type]
                            deadline=prof.deadline,
                            on_access=list(prof.on_access),
                            exclude_paths=list(prof.exclude_paths),
                            exclude_processes=list(prof.exclude_processes),
                        )
                    )
                elif isinstance(msg, p.EventMsg):
                    try:
                        self.svc.emit(Event.from_eve(json.loads(msg.eve)))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.warning("bad event from the introspection service: %s", exc)
                elif isinstance(msg, p.HealthRequest):
                    await conn.send(
                        p.HealthInfo(seq=msg.seq, json=json.dumps(self.svc.health()).encode())
                    )
                elif isinstance(msg, p.Ping):
                    await conn.send(p.Pong(seq=msg.seq))
                else:
                    raise p.ProtocolError(
                        f"unexpected {type(msg).__name__} from the introspection service"
                    )
        except p.ProtocolError as exc:
            log.warning("introspection link: %s", exc)
            await _send_quiet(conn, p.Error(code="protocol", message=str(exc)[:1000]))
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self.links.discard(conn)
            for t in list(tasks):
                t.cancel()
            await conn.close()

    async def _scan(
        self,
        conn: Connection,
        msg: p.RelayScan,
        pending: dict[int, tuple[bytearray, asyncio.Future[bytes], int]],
    ) -> None:
        req = msg.req

        async def fetch() -> bytes:
            if req.data is not None:  # a small file's content came with the request
                return req.data
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            pending[req.id] = (bytearray(), fut, req.size)
            await conn.send(p.NeedContent(id=req.id))
            return await asyncio.wait_for(fut, CONTENT_TIMEOUT)

        try:
            d = await self.svc.decide(msg.vm, req, fetch)
            if d.replacement is not None:
                for off in range(0, max(len(d.replacement), 1), p.CHUNK):
                    chunk = d.replacement[off : off + p.CHUNK]
                    final = off + p.CHUNK >= len(d.replacement)
                    await conn.send(p.Content(id=req.id, offset=off, data=chunk, final=final))
            await conn.send(d.verdict)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:
            log.exception("relayed scan of %s failed", req.path)
            await _send_quiet(
                conn,
                p.Verdict(
                    id=req.id,
                    status="error",
                    action="allow",
                    db_version=self.svc.db_version,
                    reason=f"{type(exc).__name__}: {exc}"[:500],
                ),
            )
        finally:
            pending.pop(req.id, None)


async def _send_quiet(conn: Connection, msg: p.Message) -> None:
    with contextlib.suppress(Exception):
        await conn.send(msg)


# ---------------------------------------------------------------------- introspection side
@dataclass
class _Remote:
    future: asyncio.Future[tuple[p.Verdict, bytes | None]]
    fetch: Callable[[], Awaitable[bytes]]
    replacement: bytearray | None = None


@dataclass
class _RemoteConfig:
    host: str = ""


class SvmUnavailable(ConnectionError):
    pass


@dataclass
class RemoteScanService:
    """What the relay needs from the SVM, reached over a link."""

    endpoint: Endpoint
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    default_profile: Profile = field(default_factory=Profile)
    name: str = "introspection"

    def __post_init__(self) -> None:
        self.config = _RemoteConfig()
        self.db_version = ""
        self.conn: Connection | None = None
        self.connected = asyncio.Event()
        self._ids = itertools.count(1)
        self._calls: dict[int, _Remote] = {}
        self._profiles: dict[str, asyncio.Future[p.ProfileInfo]] = {}
        self._health: dict[int, asyncio.Future[bytes]] = {}
        self._db_listeners: list[Callable[[str], None]] = []
        self._known: dict[str, Profile] = {}
        self.last_error = ""

    # the ScanService interface used by the relay
    def on_db_change(self, fn: Callable[[str], None]) -> None:
        self._db_listeners.append(fn)

    def emit(self, event: Event) -> None:
        conn = self.conn
        if conn is None:
            log.warning("event not delivered, SVM unreachable: %s", event.event_type)
            return
        asyncio.ensure_future(_send_quiet(conn, p.EventMsg(eve=eve_line(event).rstrip(b"\n"))))

    def profile(self, vm: str) -> Profile:
        return self._known.get(vm, self.default_profile)

    async def profile_async(self, vm: str) -> Profile:
        conn = self.conn
        if conn is None:
            return self.default_profile  # the agent learns the real one when it reconnects
        fut = self._profiles.get(vm)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._profiles[vm] = fut
            await conn.send(p.ProfileRequest(vm=vm))
        try:
            info = await asyncio.wait_for(asyncio.shield(fut), 10)
        except TimeoutError:
            return self.default_profile
        prof = self._known[vm] = Profile(
            name=f"svm:{vm}",
            failure_mode=info.failure_mode,
            deadline=info.deadline,
            on_access=tuple(info.on_access),
            exclude_paths=tuple(info.exclude_paths),
            exclude_processes=tuple(info.exclude_processes),
        )
        return prof

    async def decide(
        self, vm: str, req: p.ScanRequest, fetch: Callable[[], Awaitable[bytes]]
    ) -> Decision:
        conn = self.conn
        if conn is None:
            raise SvmUnavailable(self.last_error or "SVM unreachable")
        rid = next(self._ids)
        call = _Remote(asyncio.get_running_loop().create_future(), fetch)
        self._calls[rid] = call
        try:
            await conn.send(p.RelayScan(vm=vm, req=msgspec.structs.replace(req, id=rid)))
            verdict, repl = await call.future
        finally:
            self._calls.pop(rid, None)
        return Decision(msgspec.structs.replace(verdict, id=req.id), repl)

    def health(self) -> dict[str, Any]:
        return {
            "remote": str(self.endpoint),
            "connected": self.conn is not None,
            "db_version": self.db_version,
            "last_error": self.last_error,
        }

    async def remote_health(self) -> dict[str, Any]:
        conn = self.conn
        if conn is None:
            return self.health()
        seq = next(self._ids)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._health[seq] = fut
        try:
            await conn.send(p.HealthRequest(seq=seq))
            return {**self.health(), **json.loads(await asyncio.wait_for(fut, 10))}
        except (TimeoutError, ConnectionError):
            return self.health()
        finally:
            self._health.pop(seq, None)

    # connection
    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.05
        while not stop.is_set():
            try:
                r, w = await open_connection(self.endpoint, self.tls, self.server_hostname)
                conn = Connection(r, w)
                await conn.send(p.RelayHello(versions=list(p.PROTOCOL_VERSIONS), name=self.name))
                welcome = await asyncio.wait_for(conn.recv(), 10)
                if not isinstance(welcome, p.SvmWelcome):
                    raise p.ProtocolError(f"expected svm_welcome, got {type(welcome).__name__}")
            except (TimeoutError, OSError, p.ProtocolError) as exc:
                self.last_error = f"{self.endpoint}: {exc}"
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.05
            self.config.host = welcome.host
            changed = bool(self.db_version) and welcome.db_version != self.db_version
            self.db_version = welcome.db_version
            self.conn = conn
            self.connected.set()
            if changed:
                for fn in self._db_listeners:
                    fn(self.db_version)
            reader = asyncio.create_task(self._read(conn))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            reader.cancel()
            self.conn = None
            self.connected.clear()
            await conn.close()
            for call in list(self._calls.values()):
                if not call.future.done():
                    call.future.set_exception(SvmUnavailable("link to the SVM lost"))

    async def _read(self, conn: Connection) -> None:
        try:
            while True:
                msg = await conn.recv()
                if msg is None:
                    self.last_error = "the SVM closed the link"
                    return
                if isinstance(msg, p.Verdict):
                    call = self._calls.get(msg.id)
                    if call is not None and not call.future.done():
                        repl = bytes(call.replacement) if call.replacement is not None else None
                        call.future.set_result((msg, repl))
                elif isinstance(msg, p.NeedContent):
                    call = self._calls.get(msg.id)
                    if call is not None:
                        asyncio.ensure_future(self._forward_content(conn, msg.id, call))
                elif isinstance(msg, p.Content):
                    call = self._calls.get(msg.id)
                    if call is not None:
                        call.replacement = (call.replacement or bytearray()) + msg.data
                elif isinstance(msg, p.ProfileInfo):
                    fut = self._profiles.get(msg.vm)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                elif isinstance(msg, p.HealthInfo):
                    hf = self._health.get(msg.seq)
                    if hf is not None and not hf.done():
                        hf.set_result(msg.json)
                elif isinstance(msg, p.DbVersion):
                    self.db_version = msg.db_version
                    for fn in self._db_listeners:
                        fn(msg.db_version)
                elif isinstance(msg, p.Error):
                    self.last_error = f"SVM: {msg.code}: {msg.message}"
                    return
        except (p.ProtocolError, ConnectionError, OSError) as exc:
            self.last_error = str(exc)

    async def _forward_content(self, conn: Connection, rid: int, call: _Remote) -> None:
        try:
            data = await call.fetch()  # from the agent, bounded and checked by the relay
        except Exception:
            data = b""
        for off in range(0, max(len(data), 1), p.CHUNK):
            chunk = data[off : off + p.CHUNK]
            await _send_quiet(
                conn, p.Content(id=rid, offset=off, data=chunk, final=off + p.CHUNK >= len(data))
            )

    def close(self) -> None:
        pass
