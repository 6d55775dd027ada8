"""Builders of test traffic for the network engine tests (scapy, generated at test time)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw

CLIENT = "10.1.0.10"
SERVER = "10.1.0.20"


@dataclass
class TcpConv:
    """A TCP conversation with correct sequence numbers; `frames` collects raw Ethernet frames."""

    client: str = CLIENT
    server: str = SERVER
    cport: int = 40000
    sport: int = 80
    cseq: int = 1000
    sseq: int = 5000
    ts: float = 1_700_000_000.0
    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def _pkt(self, toserver: bool, flags: str, seq: int, ack: int, data: bytes) -> ScapyPacket:
        if toserver:
            ip = IP(src=self.client, dst=self.server)
            tcp = TCP(sport=self.cport, dport=self.sport, flags=flags, seq=seq, ack=ack)
        else:
            ip = IP(src=self.server, dst=self.client)
            tcp = TCP(sport=self.sport, dport=self.cport, flags=flags, seq=seq, ack=ack)
        p = Ether() / ip / tcp
        if data:
            p = p / Raw(data)
        return p

    def emit(self, p: ScapyPacket) -> None:
        self.ts += 0.001
        self.frames.append((self.ts, bytes(p)))

    def handshake(self) -> TcpConv:
        self.emit(self._pkt(True, "S", self.cseq, 0, b""))
        self.cseq += 1
        self.emit(self._pkt(False, "SA", self.sseq, self.cseq, b""))
        self.sseq += 1
        self.emit(self._pkt(True, "A", self.cseq, self.sseq, b""))
        return self

    def send(self, data: bytes, toserver: bool = True, flags: str = "PA") -> TcpConv:
        if toserver:
            self.emit(self._pkt(True, flags, self.cseq, self.sseq, data))
            self.cseq += len(data)
        else:
            self.emit(self._pkt(False, flags, self.sseq, self.cseq, data))
            self.sseq += len(data)
        return self

    def segments(self, data: bytes, size: int, toserver: bool = True) -> list[bytes]:
        """Frames carrying `data` in `size`-byte segments (not emitted: the test orders them)."""
        out = []
        base = self.cseq if toserver else self.sseq
        ack = self.sseq if toserver else self.cseq
        for off in range(0, len(data), size):
            out.append(bytes(self._pkt(toserver, "PA", base + off, ack, data[off : off + size])))
        if toserver:
            self.cseq += len(data)
        else:
            self.sseq += len(data)
        return out

    def fin(self) -> TcpConv:
        self.emit(self._pkt(True, "FA", self.cseq, self.sseq, b""))
        self.cseq += 1
        self.emit(self._pkt(False, "FA", self.sseq, self.cseq, b""))
        self.sseq += 1
        self.emit(self._pkt(True, "A", self.cseq, self.sseq, b""))
        return self


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    return bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload))


def client_hello(
    sni: str | None,
    *,
    version: int = 0x0303,
    ciphers: list[int],
    extensions: list[tuple[int, bytes]] | None = None,
    groups: list[int] | None = None,
    point_formats: list[int] | None = None,
    ext_order: list[int] | None = None,
    sig_algs: list[int] | None = None,
    alpn: list[bytes] | None = None,
    supported_versions: list[int] | None = None,
) -> bytes:
    """A TLS record holding a ClientHello built byte by byte (no TLS library involved).

    `ext_order` lists extension types in wire order; known ones get real bodies.
    """
    bodies: dict[int, bytes] = {}
    if sni is not None:
        name = sni.encode()
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        bodies[0] = struct.pack("!H", len(entry)) + entry
    if groups is not None:
        g = b"".join(struct.pack("!H", x) for x in groups)
        bodies[10] = struct.pack("!H", len(g)) + g
    if point_formats is not None:
        bodies[11] = bytes([len(point_formats)]) + bytes(point_formats)
    if sig_algs is not None:
        s = b"".join(struct.pack("!H", x) for x in sig_algs)
        bodies[13] = struct.pack("!H", len(s)) + s
    if alpn is not None:
        a = b"".join(bytes([len(x)]) + x for x in alpn)
        bodies[16] = struct.pack("!H", len(a)) + a
    if supported_versions is not None:
        v = b"".join(struct.pack("!H", x) for x in supported_versions)
        bodies[43] = bytes([len(v)]) + v
    for t, b in extensions or []:
        bodies[t] = b
    order = ext_order if ext_order is not None else list(bodies)
    ext = b"".join(
        struct.pack("!HH", t, len(bodies.get(t, b""))) + bodies.get(t, b"") for t in order
    )
    cs = b"".join(struct.pack("!H", c) for c in ciphers)
    hello = (
        struct.pack("!H", version)
        + bytes(range(32))  # random
        + b"\x00"  # no session id
        + struct.pack("!H", len(cs))
        + cs
        + b"\x01\x00"  # compression: null
        + struct.pack("!H", len(ext))
        + ext
    )
    hs = b"\x01" + len(hello).to_bytes(3, "big") + hello
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def server_hello(cipher: int, extensions: list[tuple[int, bytes]], version: int = 0x0303) -> bytes:
    ext = b"".join(struct.pack("!HH", t, len(b)) + b for t, b in extensions)
    body = (
        struct.pack("!H", version)
        + bytes(32)
        + b"\x00"
        + struct.pack("!H", cipher)
        + b"\x00"
        + struct.pack("!H", len(ext))
        + ext
    )
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs
