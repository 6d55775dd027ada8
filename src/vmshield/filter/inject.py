"""Active responses on the bridge: TCP RST to both sides, the HTTP block page, TLS reset.

Frames are written with AF_PACKET onto the bridge port facing the host that must receive them
(the port a packet came in on faces its sender), so they reach the VM as if sent by its peer.
Destination MACs come from a table learned from queued packets (NFQUEUE hands over the source MAC
and the physical in-port of each packet), with the 802.1Q VLAN the host was seen in (responses
to a tagged guest are tagged). IPv4 and IPv6 (a TCP header right after the IPv6 header; a
segment behind extension headers gets no response, only the drop).
"""

from __future__ import annotations

import html
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_packet(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    ttl: int = 64,
    window: int = 0,
) -> bytes:
    tcp = (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            5 << 4,
            flags,
            window,
            0,
            0,
        )
        + payload
    )
    if len(src) == 16:
        # IPv6: the pseudo-header has 32-bit length and next-header fields (RFC 8200 8.1).
        pseudo = src + dst + struct.pack("!I3xB", len(tcp), 6)
        csum = checksum(pseudo + tcp)
        tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
        return struct.pack("!IHBB", 6 << 28, len(tcp), 6, ttl) + src + dst + tcp
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    csum = checksum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, ttl, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


@dataclass
class TcpView:
    """The fields of a queued TCP/IPv4 packet a response needs."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload_len: int

    @classmethod
    def parse(cls, ip: bytes) -> TcpView | None:
        if len(ip) >= 60 and ip[0] >> 4 == 6 and ip[6] == 6:
            plen = struct.unpack_from("!H", ip, 4)[0]
            sport, dport, seq, ack, off = struct.unpack_from("!HHIIB", ip, 40)
            doff = (off >> 4) * 4
            total = min(40 + plen, len(ip))
            return cls(
                ip[8:24], ip[24:40], sport, dport, seq, ack, ip[53], max(0, total - 40 - doff)
            )
        if len(ip) < 40 or ip[0] >> 4 != 4 or ip[9] != 6:
            return None
        ihl = (ip[0] & 0x0F) * 4
        total = min(struct.unpack_from("!H", ip, 2)[0], len(ip))
        if len(ip) < ihl + 20:
            return None
        sport, dport, seq, ack, off = struct.unpack_from("!HHIIB", ip, ihl)
        flags = ip[ihl + 13]
        doff = (off >> 4) * 4
        return cls(ip[12:16], ip[16:20], sport, dport, seq, ack, flags, max(0, total - ihl - doff))


BLOCK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Blocked by vmshield</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>Access blocked</h1>
<p>vmshield blocked this page because it is listed as <b>{category}</b>.</p>
<p>URL: <code>{url}</code></p>
<p>Rule: {reason}</p>
<p>If you think this is a mistake, contact your administrator and quote event {event_id}.</p>
</body></html>
"""


def block_page_response(url: str, category: str, reason: str, event_id: str) -> bytes:
    body = BLOCK_PAGE.format(
        url=html.escape(url),
        category=html.escape(category),
        reason=html.escape(reason),
        event_id=html.escape(event_id),
    ).encode()
    head = (
        "HTTP/1.1 403 Forbidden\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Vmshield: blocked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head + body


class Injector:
    """Sends responses onto bridge ports; remembers which MAC/port each address was seen on."""

    def __init__(self, max_hosts: int = 65536) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # send-only
        self._hosts: OrderedDict[bytes, tuple[bytes, int, int]] = OrderedDict()
        self._max = max_hosts
        self._names: dict[int, str] = {}
        self.sent = 0

    def close(self) -> None:
        self.sock.close()

    def learn(self, ip: bytes, mac: bytes, ifindex: int, vlan: int = 0) -> None:
        if len(ip) not in (4, 16) or len(mac) != 6 or not ifindex:
            return
        if self._hosts.get(ip) != (mac, ifindex, vlan):
            self._hosts[ip] = (mac, ifindex, vlan)
            self._hosts.move_to_end(ip)
            if len(self._hosts) > self._max:
                self._hosts.popitem(last=False)

    def _send(self, ip_packet: bytes, dst_ip: bytes, src_ip: bytes) -> bool:
        dst = self._hosts.get(dst_ip)
        src = self._hosts.get(src_ip)
        if dst is None:
            return False
        mac, ifindex, vlan = dst
        src_mac = src[0] if src else b"\x02\x00\x00\x00\x00\x01"
        name = self._names.get(ifindex)
        if name is None:
            try:
                name = self._names[ifindex] = socket.if_indextoname(ifindex)
            except OSError:
                return False
        etype = ETH_P_IPV6 if len(dst_ip) == 16 else ETH_P_IP
        tag = struct.pack("!HH", ETH_P_8021Q, vlan) if vlan else b""
        frame = mac + src_mac + tag + struct.pack("!H", etype) + ip_packet
        try:
            self.sock.sendto(frame, (name, etype))
        except OSError:
            return False
        self.sent += 1
        return True

    def reset_both(self, t: TcpView) -> int:
        """RST to the sender (as if from the receiver) and to the receiver (as if from the sender)."""
        n = 0
        seq_after = t.seq + t.payload_len + (1 if t.flags & 0x03 else 0)
        to_sender = tcp_packet(t.dst, t.src, t.dport, t.sport, t.ack, seq_after, 0x14)
        n += self._send(to_sender, t.src, t.dst)
        # The current packet is dropped, so the receiver still expects t.seq: a RST with any other
        # sequence number only earns a challenge ACK (RFC 5961) and leaves the peer hanging.
        to_receiver = tcp_packet(t.src, t.dst, t.sport, t.dport, t.seq, t.ack, 0x14)
        n += self._send(to_receiver, t.dst, t.src)
        return n

    def block_page(self, t: TcpView, response: bytes) -> int:
        """Answer the client's request with `response` (then FIN), and reset the server side."""
        n = 0
        ack = t.seq + t.payload_len
        # Keep segments under a typical MSS; the page is small.
        seq = t.ack
        for i in range(0, len(response), 1400):
            chunk = response[i : i + 1400]
            last = i + 1400 >= len(response)
            flags = 0x18 | (0x01 if last else 0)  # PSH|ACK (+FIN)
            n += self._send(
                tcp_packet(t.dst, t.src, t.dport, t.sport, seq, ack, flags, chunk, window=65535),
                t.src,
                t.dst,
            )
            seq += len(chunk)
        n += self._send(
            tcp_packet(t.src, t.dst, t.sport, t.dport, t.seq, t.ack, 0x14), t.dst, t.src
        )
        return n
