"""The agent's side of the protocol: one connection, many requests in flight, reconnect with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from vmshield.transport import protocol as p
from vmshield.transport.endpoints import Endpoint, open_connection
from vmshield.transport.stream import Connection

log = logging.getLogger("vmshield.agent")

MAX_REPLACEMENT = 100 * 1024 * 1024


class Unreachable(ConnectionError):
    """No connection to the introspection service right now."""


@dataclass
class _Request:
    req: p.ScanRequest
    fd: int  # our own dup of the file, for content the SVM asks for; closed when the request ends
    future: asyncio.Future[tuple[p.Verdict, bytes | None]]
    replacement: bytearray | None = None
    sender: asyncio.Task[None] | None = None


@dataclass
class ClientHooks:
    on_welcome: Callable[[p.Welcome], Awaitable[None]] | None = None
    on_db: Callable[[str], None] | None = None
    on_order: Callable[[p.ScanOrder], Awaitable[None]] | None = None
    on_disconnect: Callable[[], None] | None = None


@dataclass
class AgentClient:
    endpoint: Endpoint
    hello: Callable[[], p.Hello]
    hooks: ClientHooks = field(default_factory=ClientHooks)
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    backoff_min: float = 0.05
    backoff_max: float = 10.0

    def __post_init__(self) -> None:
        self.conn: Connection | None = None
        self.welcome: p.Welcome | None = None
        self._ids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._slots: asyncio.Semaphore | None = None
        self.connected = asyncio.Event()
        self.last_error = ""
        self.connects = 0

    # ------------------------------------------------------------------ requests
    async def request(
        self,
        path: str,
        sha256: str,
        size: int,
        kind: p.EventKind,
        fd: int,
        order: int = 0,
        data: bytes | None = None,
    ) -> tuple[p.Verdict, bytes | None]:
        """Ask for a verdict. `fd` is duplicated; the caller keeps its own. Raises Unreachable."""
        conn = self.conn
        if conn is None or self._slots is None:
            raise Unreachable(self.last_error or "not connected")
        async with self._slots:  # never more in flight than the service agreed to (backpressure)
            if self.conn is not conn:
                raise Unreachable("connection lost")
            rid = next(self._ids)
            req = p.ScanRequest(
                id=rid,
                path=path[: p.MAX_PATH],
                sha256=sha256,
                size=size,
                kind=kind,
                order=order,
                # inline only what the service accepts (older services announce no inline_max)
                data=data if data is not None and len(data) <= self._inline_max() else None,
            )
            entry = _Request(req, os.dup(fd), asyncio.get_running_loop().create_future())
            self._requests[rid] = entry
            try:
                await conn.send(req)
                return await entry.future
            finally:
                self._requests.pop(rid, None)
                if entry.sender is not None and not entry.sender.done():
                    entry.sender.cancel()
                    with contextlib.suppress(BaseException):
                        await asyncio.wait({entry.sender}, timeout=2.0)
                os.close(entry.fd)

    def _inline_max(self) -> int:
        return min(self.welcome.inline_max, p.INLINE_MAX) if self.welcome is not None else 0

    async def send(self, msg: p.Message) -> None:
        conn = self.conn
        if conn is None:
            raise Unreachable("not connected")
        await conn.send(msg)

    async def _send_content(self, conn: Connection, entry: _Request) -> None:
        size, off = entry.req.size, 0
        try:
            while True:
                n = min(p.CHUNK, size - off)
                data = (
                    os.pread(entry.fd, n, off)
                    if n < 65536
                    else await asyncio.to_thread(os.pread, entry.fd, n, off)
                )
                final = off + len(data) >= size or not data
                await conn.send(p.Content(id=entry.req.id, offset=off, data=data, final=final))
                off += len(data)
                if final:
                    return
        except OSError as exc:
            log.warning("reading %s for the SVM failed: %s", entry.req.path, exc)
            with contextlib.suppress(Exception):
                await conn.send(p.Content(id=entry.req.id, offset=off, data=b"", final=True))

    # ------------------------------------------------------------------ connection
    async def _connect_once(self) -> Connection:
        reader, writer = await open_connection(self.endpoint, self.tls, self.server_hostname)
        conn = Connection(reader, writer)
        try:
            await conn.send(self.hello())
            msg = await asyncio.wait_for(conn.recv(), 10.0)
            if isinstance(msg, p.Error):
                raise p.ProtocolError(
                    f"refused by the introspection service: {msg.code}: {msg.message}"
                )
            if not isinstance(msg, p.Welcome):
                raise p.ProtocolError(f"expected welcome, got {type(msg).__name__}")
            if msg.version not in p.PROTOCOL_VERSIONS:
                raise p.ProtocolError(
                    f"service chose protocol version {msg.version}, which we do not speak"
                )
        except BaseException:
            await conn.close()
            raise
        self.welcome = msg
        return conn

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set; reconnect with exponential backoff and jitter."""
        delay = self.backoff_min
        while not stop.is_set():
            try:
                conn = await self._connect_once()
            except (TimeoutError, OSError, p.ProtocolError) as exc:
                self.last_error = f"{self.endpoint}: {exc}"
                log.info(
                    "cannot reach the introspection service: %s (retry in %.2fs)",
                    self.last_error,
                    delay,
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay * (0.5 + random.random()))
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff_min
            assert self.welcome is not None
            self._slots = asyncio.Semaphore(self.welcome.max_inflight)
            self.conn = conn
            self.connects += 1
            reader = asyncio.create_task(self._read_loop(conn))
            if self.hooks.on_welcome:
                await self.hooks.on_welcome(self.welcome)  # the profile applies before "connected"
            self.connected.set()
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            self.connected.clear()
            self.conn = None
            await conn.close()
            for entry in list(self._requests.values()):
                if not entry.future.done():
                    entry.future.set_exception(Unreachable("connection lost"))
            if self.hooks.on_disconnect:
                self.hooks.on_disconnect()

    async def _read_loop(self, conn: Connection) -> None:
        try:
            while True:
                msg = await conn.recv()
                if msg is None:
                    self.last_error = "the introspection service closed the connection"
                    return
                if isinstance(msg, p.Verdict):
                    entry = self._requests.get(msg.id)
                    if entry is not None and not entry.future.done():
                        repl = bytes(entry.replacement) if entry.replacement is not None else None
                        entry.future.set_result((msg, repl))
                elif isinstance(msg, p.NeedContent):
                    entry = self._requests.get(msg.id)
                    if entry is None:
                        # Request abandoned (deadline): say so at once rather than let the SVM wait.
                        await conn.send(p.Content(id=msg.id, offset=0, data=b"", final=True))
                    else:
                        entry.sender = asyncio.create_task(self._send_content(conn, entry))
                elif isinstance(msg, p.Content):
                    entry = self._requests.get(msg.id)
                    if entry is None:
                        continue
                    if entry.replacement is None:
                        entry.replacement = bytearray()
                    if (
                        msg.offset != len(entry.replacement)
                        or len(entry.replacement) + len(msg.data) > MAX_REPLACEMENT
                    ):
                        raise p.ProtocolError(
                            f"replacement content for {msg.id} out of order or too large"
                        )
                    entry.replacement += msg.data
                elif isinstance(msg, p.Welcome):
                    # The VM's profile changed on the service's side (e.g. in the center): apply
                    # it on this connection. The window and version agreed at connect stay.
                    if self.welcome is not None and msg.version != self.welcome.version:
                        raise p.ProtocolError("a profile update may not change the version")
                    self.welcome = msg
                    if self.hooks.on_welcome:
                        await self.hooks.on_welcome(msg)
                elif isinstance(msg, p.DbVersion):
                    if self.hooks.on_db:
                        self.hooks.on_db(msg.db_version)
                elif isinstance(msg, p.ScanOrder):
                    if self.hooks.on_order:
                        asyncio.ensure_future(self.hooks.on_order(msg))
                elif isinstance(msg, p.Ping):
                    await conn.send(p.Pong(seq=msg.seq))
                elif isinstance(msg, p.Error):
                    self.last_error = f"service error {msg.code}: {msg.message}"
                    log.warning("%s", self.last_error)
                    return
        except (p.ProtocolError, ConnectionError, OSError) as exc:
            self.last_error = str(exc)
            log.warning("connection to the introspection service lost: %s", exc)
