"""The introspection service: accepts thin agents, authenticates them, relays scans to the SVM.

One task per agent connection reads frames; each scan request runs as its own task, so many are in
flight per connection and answers go back in any order. A connection that breaks the protocol
(malformed or oversized frame, bad field, more requests in flight than agreed) gets an `Error` and
is closed; other agents are not affected. Per-VM fairness is the scan service's (`svm/fair.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from vmshield import __version__
from vmshield.events import SEVERITY_INFO, SEVERITY_MEDIUM, Event
from vmshield.introspection.auth import Authenticator, AuthError
from vmshield.svm.service import MAX_ONACCESS_SIZE, ScanService
from vmshield.transport import protocol as p
from vmshield.transport.stream import Connection
from vmshield.transport.tls import peer_common_name

log = logging.getLogger("vmshield.introspection")

HELLO_TIMEOUT = 10.0
MAX_CONNECTIONS = 4096  # open agent connections, authenticated or not
CONTENT_TIMEOUT = 60.0


@dataclass
class VmCounters:
    connections: int = 0
    requests: int = 0
    verdicts: int = 0
    detections: int = 0
    content_bytes: int = 0
    protocol_errors: int = 0
    auth_failures: int = 0
    last_seen: float = 0.0


@dataclass
class _Pending:
    req: p.ScanRequest
    buf: bytearray = field(default_factory=bytearray)
    want: bool = False
    done: asyncio.Future[bytes] | None = None


@dataclass
class _Order:
    queue: asyncio.Queue[dict[str, Any]]
    files: int = 0


class AgentSession:
    def __init__(
        self, relay: Relay, conn: Connection, vm: str, info: p.VmInfo, max_inflight: int
    ) -> None:
        self.relay = relay
        self.conn = conn
        self.vm = vm
        self.info = info
        self.max_inflight = max_inflight
        self.pending: dict[int, _Pending] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.orders: dict[int, _Order] = {}
        self.connected_at = time.time()
        self.version = 1
        self.welcome: p.Welcome | None = None  # the profile last sent

    async def run(self) -> None:
        while True:
            msg = await self.conn.recv()
            if msg is None:
                return
            self.relay.counters(self.vm).last_seen = time.time()
            if isinstance(msg, p.ScanRequest):
                if msg.id in self.pending:
                    raise p.ProtocolError(f"request id {msg.id} already in flight")
                if len(self.pending) >= self.max_inflight:
                    raise p.ProtocolError(f"more than {self.max_inflight} requests in flight")
                self.pending[msg.id] = _Pending(msg)
                t = asyncio.create_task(self._scan(msg))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
            elif isinstance(msg, p.Content):
                self._content(msg)
            elif isinstance(msg, p.InfoUpdate):
                self.info = msg.info
                self.relay.emit_agent(self.vm, "info", info=msgspec_to_dict(msg.info))
            elif isinstance(msg, p.OrderProgress):
                order = self.orders.get(msg.order)
                if order is not None:
                    order.files = msg.files
                    await order.queue.put(
                        {"progress": msg.files, "done": msg.done, "error": msg.error}
                    )
            elif isinstance(msg, p.Notice):
                sev = (
                    SEVERITY_MEDIUM
                    if msg.state in ("fail_open", "fail_closed", "overflow", "enforce_failed")
                    else SEVERITY_INFO
                )
                self.relay.emit_agent(self.vm, msg.state, sev, count=msg.count, detail=msg.detail)
            elif isinstance(msg, p.Ping):
                await self.conn.send(p.Pong(seq=msg.seq))
            elif isinstance(msg, p.Pong):
                pass
            else:
                raise p.ProtocolError(f"unexpected {type(msg).__name__} from an agent")

    def _content(self, msg: p.Content) -> None:
        pend = self.pending.get(msg.id)
        if pend is None or not pend.want or pend.done is None or pend.done.done():
            raise p.ProtocolError(f"content for request {msg.id}, which did not ask for it")
        if msg.offset != len(pend.buf):
            raise p.ProtocolError(
                f"content for request {msg.id}: offset {msg.offset}, expected {len(pend.buf)}"
            )
        if len(pend.buf) + len(msg.data) > pend.req.size:
            raise p.ProtocolError(
                f"content for request {msg.id} exceeds its announced size {pend.req.size}"
            )
        pend.buf += msg.data
        self.relay.counters(self.vm).content_bytes += len(msg.data)
        if msg.final:
            pend.done.set_result(bytes(pend.buf))
            pend.buf = bytearray()

    async def _scan(self, req: p.ScanRequest) -> None:
        c = self.relay.counters(self.vm)
        c.requests += 1
        pend = self.pending[req.id]

        async def fetch() -> bytes:
            if req.data is not None:  # sent with the request (validated: its announced size)
                c.content_bytes += len(req.data)
                return req.data
            pend.want = True
            pend.buf = bytearray()
            pend.done = asyncio.get_running_loop().create_future()
            await self.conn.send(p.NeedContent(id=req.id))
            return await asyncio.wait_for(pend.done, CONTENT_TIMEOUT)

        try:
            decision = await self.relay.svm.decide(self.vm, req, fetch)
            if decision.replacement is not None:
                data = decision.replacement
                for off in range(0, max(len(data), 1), p.CHUNK):
                    chunk = data[off : off + p.CHUNK]
                    await self.conn.send(
                        p.Content(
                            id=req.id, offset=off, data=chunk, final=off + p.CHUNK >= len(data)
                        )
                    )
            await self.conn.send(decision.verdict)
            c.verdicts += 1
            if decision.verdict.status == "infected":
                c.detections += 1
            order = self.orders.get(req.order) if req.order else None
            if order is not None:
                v = decision.verdict
                await order.queue.put(
                    {
                        "path": req.path,
                        "status": v.status,
                        "action": v.action,
                        "cached": v.cached,
                        "detections": [d.name for d in v.detections],
                    }
                )
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # one request failing must not take the connection down
            if not isinstance(exc, ConnectionError):
                log.exception("scan of %s from %s failed", req.path, self.vm)
            prof = self.relay.svm.profile(self.vm)
            with contextlib.suppress(Exception):
                await self.conn.send(
                    p.Verdict(
                        id=req.id,
                        status="error",
                        action="allow" if prof.failure_mode == "open" else "deny",
                        db_version=self.relay.svm.db_version,
                        reason=f"{type(exc).__name__}: {exc}"[:500],
                    )
                )
        finally:
            self.pending.pop(req.id, None)

    async def order(self, paths: list[str]) -> AsyncIterator[dict[str, Any]]:
        oid = next(self.relay._order_ids)
        order = _Order(asyncio.Queue(maxsize=1024))
        self.orders[oid] = order
        try:
            await self.conn.send(p.ScanOrder(order=oid, paths=paths))
            while True:
                item = await order.queue.get()
                yield item
                if item.get("done"):
                    # Verdicts of the last files may still be on their way.
                    while self.pending and any(x.req.order == oid for x in self.pending.values()):
                        try:
                            yield await asyncio.wait_for(order.queue.get(), 5.0)
                        except TimeoutError:
                            break
                    while not order.queue.empty():
                        yield order.queue.get_nowait()
                    return
        finally:
            self.orders.pop(oid, None)


def msgspec_to_dict(obj: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(obj)  # type: ignore[no-any-return]


class Relay:
    def __init__(self, svm: ScanService, auth: Authenticator, max_inflight: int = 64) -> None:
        self.svm = svm
        self.auth = auth
        self.max_inflight = max_inflight
        self.sessions: dict[str, AgentSession] = {}
        self._counters: dict[str, VmCounters] = {}
        self._order_ids = itertools.count(1)
        self.started = time.time()
        self.rejected = 0
        self.open_connections = 0
        svm.on_db_change(self._broadcast_db)

    async def _profile(self, vm: str) -> Any:
        get = getattr(self.svm, "profile_async", None)
        return await get(vm) if get is not None else self.svm.profile(vm)

    def inventory_vm(self, claimed: str, info: p.VmInfo) -> str:
        """The inventory VM this agent is, once the center's inventory is known (enrolled SVM).

        `claimed` is what the token or certificate names (already bound to the identity the
        agent reported). When it names an inventory VM, the BIOS UUID the agent reports must be
        that VM's: a token copied into a clone does not make the clone that VM. When it names no
        inventory VM, the reported UUID finds the VM, unless another credential names that VM.
        Without an inventory (local configuration) the claimed name is kept.
        """
        cfg = getattr(self.svm, "config", None)
        inv = getattr(cfg, "center_inventory", None)
        if not inv:
            return claimed
        idents = {x.lower() for x in (info.dmi_uuid, info.machine_id) if x}
        named = inv.get(claimed) or inv.get(claimed.lower())
        if named is not None:
            if named.uuids and not (named.uuids & idents):
                raise AuthError(
                    f"credential for {claimed}: the agent reports UUID "
                    f"{info.dmi_uuid or info.machine_id or '(none)'}, the inventory has "
                    f"{', '.join(sorted(named.uuids)[:2])}"
                )
            return named.name
        found = next((inv[i] for i in idents if i in inv), None)
        if found is None:
            log.warning("agent %s: not in the center's inventory of this host", claimed)
            return claimed
        if any(e.vm in (found.name, *found.uuids) for e in self.auth.tokens):
            raise AuthError(
                f"credential for {claimed}: the reported UUID is inventory VM {found.name}, "
                "which has its own credential"
            )
        return found.name

    def welcome(self, vm: str, version: int, profile: Any) -> p.Welcome:
        return p.Welcome(
            version=version,
            vm=vm,
            db_version=self.svm.db_version,
            max_inflight=self.max_inflight,
            failure_mode=profile.failure_mode,
            deadline=profile.deadline,
            on_access=list(profile.on_access),
            exclude_paths=list(profile.exclude_paths),
            exclude_processes=list(profile.exclude_processes),
            max_size=MAX_ONACCESS_SIZE,
            inline_max=p.INLINE_MAX,
        )

    def push_profiles(self) -> None:
        """A new configuration (the center's): agents whose profile changed get it at once, on
        their connection (no reconnect, so no failure-mode window)."""
        for vm, sess in list(self.sessions.items()):
            w = self.welcome(vm, sess.version, self.svm.profile(vm))
            if sess.welcome is not None and w != sess.welcome:
                sess.welcome = w
                asyncio.ensure_future(self._send_quiet(sess.conn, w))
                self.emit_agent(vm, "profile", on_access=w.on_access, failure_mode=w.failure_mode)

    def counters(self, vm: str) -> VmCounters:
        c = self._counters.get(vm)
        if c is None:
            c = self._counters[vm] = VmCounters()
        return c

    def emit_agent(
        self, vm: str | None, state: str, severity: int = SEVERITY_INFO, **data: Any
    ) -> None:
        try:
            self.svm.emit(
                Event(
                    event_type="agent",
                    host=self.svm.config.host,
                    vm=vm,
                    severity=severity,
                    data={"agent": {"state": state, **data}},
                )
            )
        except Exception:
            log.exception("event sink failed")

    def _broadcast_db(self, version: str) -> None:
        for s in list(self.sessions.values()):
            asyncio.ensure_future(self._send_quiet(s.conn, p.DbVersion(db_version=version)))

    @staticmethod
    async def _send_quiet(conn: Connection, msg: p.Message) -> None:
        with contextlib.suppress(Exception):
            await conn.send(msg)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
        session: AgentSession | None = None
        vm: str | None = None
        if self.open_connections >= MAX_CONNECTIONS:  # a connection flood must not exhaust us
            self.rejected += 1
            await conn.close()
            return
        self.open_connections += 1
        try:
            hello = await asyncio.wait_for(conn.recv(), HELLO_TIMEOUT)
            if not isinstance(hello, p.Hello):
                raise p.ProtocolError("the first message must be hello")
            version = p.negotiate(hello.versions)
            cn = peer_common_name(conn.peer_certificate())
            try:
                claimed = self.auth.authenticate(hello, cn, bind=False)
                vm = self.inventory_vm(claimed, hello.info)
                self.auth.bind(hello, cn, claimed)
            except AuthError as exc:
                self.rejected += 1
                self.emit_agent(None, "rejected", SEVERITY_MEDIUM, reason=str(exc), peer=conn.peer)
                await self._send_quiet(conn, p.Error(code="auth", message=str(exc)))
                return
            ids = getattr(self.svm, "identities", None)
            if ids is not None:
                ids[vm] = Authenticator.identity(hello.info)
            profile = await self._profile(vm)
            session = AgentSession(self, conn, vm, hello.info, self.max_inflight)
            session.version = version
            old = self.sessions.get(vm)
            if old is not None:  # a reconnecting agent replaces its stale connection
                await old.conn.close()
            self.sessions[vm] = session
            self.counters(vm).connections += 1
            welcome = self.welcome(vm, version, profile)
            session.welcome = welcome
            await conn.send(welcome)
            self.emit_agent(vm, "connected", info=msgspec_to_dict(hello.info), peer=conn.peer)
            await session.run()
        except p.ProtocolError as exc:
            if vm:
                self.counters(vm).protocol_errors += 1
            else:
                self.rejected += 1
            log.warning("agent %s (%s): protocol error: %s", vm or "?", conn.peer, exc)
            self.emit_agent(vm, "protocol_error", SEVERITY_MEDIUM, reason=str(exc)[:500])
            await self._send_quiet(conn, p.Error(code="protocol", message=str(exc)[:1000]))
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.info("agent %s (%s) gone: %s", vm or "?", conn.peer, exc)
        finally:
            self.open_connections -= 1
            if session is not None:
                for t in list(session.tasks):
                    t.cancel()
                if self.sessions.get(session.vm) is session:
                    del self.sessions[session.vm]
                    self.emit_agent(session.vm, "disconnected")
            await conn.close()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "agents": {
                vm: {
                    "peer": s.conn.peer,
                    "hostname": s.info.hostname,
                    "in_flight": len(s.pending),
                    "since": s.connected_at,
                }
                for vm, s in self.sessions.items()
            },
            "rejected_connections": self.rejected,
            "open_connections": self.open_connections,
            "vms": {vm: vars(c) for vm, c in self._counters.items()},
            "svm": self.svm.health(),
        }

    # ---------------------------------------------------------------- control socket
    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Local admin socket: one JSON request line, JSON lines back (health, on-demand scans)."""
        try:
            line = await asyncio.wait_for(reader.readline(), 10.0)
            try:
                req = json.loads(line)
                cmd = req["cmd"]
            except (ValueError, KeyError, TypeError):
                writer.write(b'{"error": "expected a JSON object with cmd"}\n')
                return
            if cmd == "health":
                h = self.health()
                remote = getattr(self.svm, "remote_health", None)
                if remote is not None:  # the SVM runs in another process
                    h["svm"] = await remote()
                writer.write(json.dumps(h).encode() + b"\n")
            elif cmd == "scan":
                vm, paths = str(req.get("vm", "")), [str(x) for x in req.get("paths", [])]
                session = self.sessions.get(vm)
                if session is None:
                    writer.write(
                        json.dumps({"error": f"no agent connected for VM {vm!r}"}).encode() + b"\n"
                    )
                    return
                async for item in session.order(paths):
                    writer.write(json.dumps(item).encode() + b"\n")
                    await writer.drain()
            else:
                writer.write(json.dumps({"error": f"unknown command {cmd!r}"}).encode() + b"\n")
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
