"""One framed connection over an asyncio stream (Unix, TCP+TLS or vsock: the same code)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from vmshield.transport.protocol import _HEADER, MAX_FRAME, Message, ProtocolError, decode, encode


class Connection:
    """Reads and writes whole messages; `send` waits for the peer to drain (backpressure)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int = MAX_FRAME
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_frame = max_frame
        self._send_lock = asyncio.Lock()
        self.closed = False

    @property
    def peer(self) -> str:
        name = self.writer.get_extra_info("peername")
        return str(name) if name else "local"

    def peer_certificate(self) -> dict[str, Any] | None:
        obj = self.writer.get_extra_info("ssl_object")
        if isinstance(obj, ssl.SSLObject):
            return obj.getpeercert()  # type: ignore[return-value]
        return None

    def peer_credentials(self) -> tuple[int, int, int] | None:
        """(pid, uid, gid) of a Unix-socket peer."""
        import socket
        import struct

        sock = self.writer.get_extra_info("socket")
        if sock is None or sock.family != socket.AF_UNIX:
            return None
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return pid, uid, gid

    async def recv(self) -> Message | None:
        """The next message, or None at a clean end of stream. ProtocolError on a bad frame."""
        try:
            header = await self.reader.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ProtocolError("connection closed inside a frame header") from None
            return None
        (length,) = _HEADER.unpack(header)
        if length > self.max_frame:
            # Refuse before reading: a guest must not make us buffer an arbitrary amount.
            raise ProtocolError(f"frame of {length} bytes exceeds the {self.max_frame}-byte limit")
        try:
            body = await self.reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed inside a frame") from None
        return decode(body)

    async def send(self, msg: Message) -> None:
        data = encode(msg)
        async with self._send_lock:
            if self.closed:
                raise ConnectionError("connection closed")
            self.writer.write(data)
            await self.writer.drain()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        except (TimeoutError, OSError, ssl.SSLError):
            pass
