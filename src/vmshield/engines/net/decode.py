"""Packet decoder: Ethernet / 802.1Q / QinQ / ARP / IPv4 / IPv6 / TCP / UDP / ICMP / ICMPv6.

Hot path of the engine: plain `struct` unpacking at fixed offsets, no per-layer objects. A malformed
frame never raises; it comes back as a `Packet` with the layers that were readable and an anomaly
named as Suricata names its decoder events (`decoder.ipv4.trunc_pkt` …).
"""

from __future__ import annotations

import socket
import struct
from typing import Final

from vmshield.engines.net.packet import (
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Packet,
)

# pcap link types (DLT / LINKTYPE values).
LINKTYPE_NULL: Final = 0  # BSD loopback: 4-byte host-order address family
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101  # raw IP, version from the first nibble (NFQUEUE hands these)
LINKTYPE_RAW_ALT: Final = 12  # DLT_RAW on some platforms
LINKTYPE_RAW_ALT2: Final = 14
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
SUPPORTED_LINKTYPES: Final = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_RAW_ALT,
        LINKTYPE_RAW_ALT2,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    }
)

ETH_IPV4: Final = 0x0800
ETH_ARP: Final = 0x0806
ETH_IPV6: Final = 0x86DD
ETH_VLAN: Final = 0x8100
ETH_QINQ: Final = 0x88A8
ETH_QINQ_OLD: Final = 0x9100
MAX_VLAN_LAYERS: Final = 2  # Suricata's limit too: deeper stacking is an anomaly

# IPv6 extension headers walked to find the upper-layer protocol.
IPV6_HOPOPTS: Final = 0
IPV6_ROUTING: Final = 43
IPV6_FRAGMENT: Final = 44
IPV6_ESP: Final = 50
IPV6_AH: Final = 51
IPV6_NONE: Final = 59
IPV6_DSTOPTS: Final = 60
IPV6_MOBILITY: Final = 135
_IPV6_EXT: Final = frozenset({IPV6_HOPOPTS, IPV6_ROUTING, IPV6_DSTOPTS, IPV6_MOBILITY})
MAX_IPV6_EXT_HEADERS: Final = (
    16  # bounded walk: a chain of empty headers must not cost unbounded time
)

_u16: Final = struct.Struct("!H").unpack_from
_eth: Final = struct.Struct("!6s6sH").unpack_from
_ipv6: Final = struct.Struct("!IHBB16s16s").unpack_from
_arp: Final = struct.Struct("!HHBBH").unpack_from

# Textual form of addresses: caching the conversion keeps inet_ntop off the hot path for the
# handful of hosts a link sees. Bounded: cleared when it grows past the limit.
_ADDR_CACHE_MAX: Final = 65536
_addr4: Final[dict[bytes, str]] = {}
_addr6: Final[dict[bytes, str]] = {}


def _ntop4(b: bytes) -> str:
    s = _addr4.get(b)
    if s is None:
        if len(_addr4) >= _ADDR_CACHE_MAX:
            _addr4.clear()
        s = _addr4[b] = socket.inet_ntop(socket.AF_INET, b)
    return s


def _ntop6(b: bytes) -> str:
    s = _addr6.get(b)
    if s is None:
        if len(_addr6) >= _ADDR_CACHE_MAX:
            _addr6.clear()
        s = _addr6[b] = socket.inet_ntop(socket.AF_INET6, b)
    return s


def decode(
    frame: bytes,
    ts: float,
    linktype: int = LINKTYPE_ETHERNET,
    iface: str = "",
    vlan: int = 0,
) -> Packet:
    """Decode one frame. Never raises for any byte string; problems become `p.anomalies`."""
    if type(frame) is not bytes:
        frame = bytes(frame)
    p = Packet(ts, frame, linktype, iface, vlan)
    n = len(frame)
    if linktype == LINKTYPE_ETHERNET:
        if n >= 34 and frame[12] == 0x08 and frame[13] == 0x00:
            # Fast path: untagged IPv4, most of the traffic.
            p.eth_dst = frame[0:6]
            p.eth_src = frame[6:12]
            p.eth_type = ETH_IPV4
            _decode_ipv4(p, frame, 14)
            return p
        if n < 14:
            p.add_anomaly("decoder.ethernet.pkt_too_small")
            return p
        dst, src, etype = _eth(frame, 0)
        p.eth_dst, p.eth_src = dst, src
        off = 14
        layers = 0
        while etype in (ETH_VLAN, ETH_QINQ, ETH_QINQ_OLD):
            layers += 1
            if layers > MAX_VLAN_LAYERS:
                p.add_anomaly("decoder.vlan.too_many_layers")
                p.eth_type = etype
                return p
            if n < off + 4:
                p.add_anomaly("decoder.vlan.header_too_small")
                p.eth_type = etype
                return p
            tci, etype = struct.unpack_from("!HH", frame, off)
            if layers == 1 or not p.vlan:
                p.vlan = tci & 0x0FFF
            off += 4
        p.eth_type = etype
        if etype == ETH_IPV4:
            _decode_ipv4(p, frame, off)
        elif etype == ETH_IPV6:
            _decode_ipv6(p, frame, off)
        elif etype == ETH_ARP:
            _decode_arp(p, frame, off)
        return p
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_ALT, LINKTYPE_RAW_ALT2):
        if n < 1:
            p.add_anomaly("decoder.ipraw.invalid_ip_version")
            return p
        ver = frame[0] >> 4
        if ver == 4:
            p.eth_type = ETH_IPV4
            _decode_ipv4(p, frame, 0)
        elif ver == 6:
            p.eth_type = ETH_IPV6
            _decode_ipv6(p, frame, 0)
        else:
            p.add_anomaly("decoder.ipraw.invalid_ip_version")
        return p
    if linktype == LINKTYPE_IPV4:
        p.eth_type = ETH_IPV4
        _decode_ipv4(p, frame, 0)
        return p
    if linktype == LINKTYPE_IPV6:
        p.eth_type = ETH_IPV6
        _decode_ipv6(p, frame, 0)
        return p
    if linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            p.add_anomaly("decoder.sll.pkt_too_small")
            return p
        etype = _u16(frame, 14)[0]
        p.eth_type = etype
        if etype == ETH_IPV4:
            _decode_ipv4(p, frame, 16)
        elif etype == ETH_IPV6:
            _decode_ipv6(p, frame, 16)
        elif etype == ETH_ARP:
            _decode_arp(p, frame, 16)
        return p
    if linktype == LINKTYPE_NULL:
        if n < 4:
            p.add_anomaly("decoder.null.pkt_too_small")
            return p
        fam = int.from_bytes(frame[:4], "little")
        if fam > 0xFFFF:  # written by a big-endian host
            fam = int.from_bytes(frame[:4], "big")
        if fam == 2:
            p.eth_type = ETH_IPV4
            _decode_ipv4(p, frame, 4)
        elif fam in (10, 24, 28, 30):  # AF_INET6 differs between the BSDs and Linux
            p.eth_type = ETH_IPV6
            _decode_ipv6(p, frame, 4)
        else:
            p.add_anomaly("decoder.null.unsupported_type")
        return p
    p.add_anomaly("decoder.unsupported_linktype")
    return p


def _decode_arp(p: Packet, b: bytes, off: int) -> None:
    if len(b) < off + 28:
        p.add_anomaly("decoder.arp.pkt_too_small")
        return
    _htype, ptype, hlen, plen, _op = _arp(b, off)
    if ptype != ETH_IPV4 or hlen != 6 or plen != 4:
        return
    # Sender and target protocol addresses, so attack detection can see ARP sweeps/spoofing.
    p.src_bytes = b[off + 14 : off + 18]
    p.dst_bytes = b[off + 24 : off + 28]
    p.src = _ntop4(p.src_bytes)
    p.dst = _ntop4(p.dst_bytes)
    p.payload = b[off : off + 28]


def _decode_ipv4(p: Packet, b: bytes, off: int) -> None:
    n = len(b) - off
    if n < 20:
        p.add_anomaly("decoder.ipv4.pkt_too_small")
        return
    # Fields read byte by byte, not with struct: the compiled build then keeps them as machine
    # integers (a struct tuple is ten Python objects per packet).
    vhl = b[off]
    if vhl >> 4 != 4:
        p.add_anomaly("decoder.ipv4.wrong_ip_version")
        return
    hlen = (vhl & 0x0F) * 4
    if hlen < 20:
        p.add_anomaly("decoder.ipv4.hlen_too_small")
        return
    tlen = (b[off + 2] << 8) | b[off + 3]
    if tlen < hlen:
        p.add_anomaly("decoder.ipv4.iplen_smaller_than_hlen")
        return
    if n < hlen:
        p.add_anomaly("decoder.ipv4.trunc_pkt")
        return
    proto = b[off + 9]
    fragw = (b[off + 6] << 8) | b[off + 7]
    src = b[off + 12 : off + 16]
    dst = b[off + 16 : off + 20]
    p.ip_version = 4
    p.src_bytes = src
    p.dst_bytes = dst
    # Inlined cache hits: this line runs for every IPv4 packet.
    p.src = _addr4.get(src) or _ntop4(src)
    p.dst = _addr4.get(dst) or _ntop4(dst)
    p.proto = proto
    p.ttl = b[off + 8]
    p.ip_id = (b[off + 4] << 8) | b[off + 5]
    p.ip_hdr = b[off : off + hlen]
    if hlen > 20:
        _check_ipv4_options(p, b, off + 20, off + hlen)
    if tlen > n:
        # Claimed length beyond the captured bytes: decode what is there, say so.
        p.add_anomaly("decoder.ipv4.trunc_pkt")
        end = off + n
    else:
        end = off + tlen  # drop Ethernet padding
    p.ip_len = end - off
    p.frag_offset = (fragw & 0x1FFF) * 8
    p.more_fragments = bool(fragw & 0x2000)
    if p.frag_offset or p.more_fragments:
        p.is_fragment = True
        p.payload = b[off + hlen : end]
        return
    _decode_l4(p, b, off + hlen, end, proto)


def _check_ipv4_options(p: Packet, b: bytes, i: int, end: int) -> None:
    while i < end:
        t = b[i]
        if t == 0:  # end of option list
            return
        if t == 1:  # NOP
            i += 1
            continue
        if i + 1 >= end:
            p.add_anomaly("decoder.ipv4.opt_pad_required")
            return
        olen = b[i + 1]
        if olen < 2:
            p.add_anomaly("decoder.ipv4.opt_invalid_len")
            return
        if i + olen > end:
            p.add_anomaly("decoder.ipv4.opt_malformed")
            return
        i += olen


def _decode_ipv6(p: Packet, b: bytes, off: int) -> None:
    n = len(b) - off
    if n < 40:
        p.add_anomaly("decoder.ipv6.pkt_too_small")
        return
    vtf, plen, nxt, hlim, src, dst = _ipv6(b, off)
    if vtf >> 28 != 6:
        p.add_anomaly("decoder.ipv6.wrong_ip_version")
        return
    p.ip_version = 6
    p.src_bytes, p.dst_bytes = src, dst
    p.src, p.dst = _ntop6(src), _ntop6(dst)
    p.ttl = hlim
    p.ip_hdr = b[off : off + 40]
    if 40 + plen > n:
        p.add_anomaly("decoder.ipv6.trunc_pkt")
        end = off + n
    else:
        end = off + 40 + plen
    p.ip_len = end - off
    i = off + 40
    hdrs = 0
    seen_frag = False
    while nxt in _IPV6_EXT or nxt in (IPV6_FRAGMENT, IPV6_AH):
        hdrs += 1
        if hdrs > MAX_IPV6_EXT_HEADERS:
            p.add_anomaly("decoder.ipv6.exthdr_too_many")
            p.proto = nxt
            return
        if i + 8 > end:
            p.add_anomaly("decoder.ipv6.trunc_exthdr")
            p.proto = nxt
            return
        if nxt == IPV6_FRAGMENT:
            if seen_frag:
                p.add_anomaly("decoder.ipv6.exthdr_dupl_fh")
            seen_frag = True
            fo = _u16(b, i + 2)[0]
            p.frag_offset = fo & 0xFFF8
            p.more_fragments = bool(fo & 1)
            p.ip_id = int.from_bytes(b[i + 4 : i + 8], "big")
            nxt = b[i]
            i += 8
            if p.frag_offset or p.more_fragments:
                p.is_fragment = True
                p.proto = nxt
                p.payload = b[i:end]
                return
            continue  # atomic fragment: a whole datagram, decode on
        hl = (b[i + 1] + 2) * 4 if nxt == IPV6_AH else (b[i + 1] + 1) * 8
        if i + hl > end:
            p.add_anomaly("decoder.ipv6.trunc_exthdr")
            p.proto = nxt
            return
        nxt = b[i]
        i += hl
    p.proto = nxt
    _decode_l4(p, b, i, end, nxt)


def _decode_l4(p: Packet, b: bytes, i: int, end: int, proto: int) -> None:
    avail = end - i
    if proto == PROTO_TCP:
        if avail < 20:
            p.add_anomaly("decoder.tcp.pkt_too_small")
            return
        hl = (b[i + 12] >> 4) * 4
        if hl < 20:
            p.add_anomaly("decoder.tcp.hlen_too_small")
            return
        if hl > avail:
            p.add_anomaly("decoder.tcp.invalid_optlen")
            return
        p.sport = (b[i] << 8) | b[i + 1]
        p.dport = (b[i + 2] << 8) | b[i + 3]
        p.tcp_seq = (b[i + 4] << 24) | (b[i + 5] << 16) | (b[i + 6] << 8) | b[i + 7]
        p.tcp_ack = (b[i + 8] << 24) | (b[i + 9] << 16) | (b[i + 10] << 8) | b[i + 11]
        p.tcp_flags = b[i + 13]
        p.tcp_win = (b[i + 14] << 8) | b[i + 15]
        p.tcp_hdr = b[i : i + hl]
        if hl > 20:
            _tcp_options(p, b, i + 20, i + hl)
        p.payload = b[i + hl : end]
    elif proto == PROTO_UDP:
        if avail < 8:
            p.add_anomaly("decoder.udp.pkt_too_small")
            return
        ulen = (b[i + 4] << 8) | b[i + 5]
        if ulen < 8:
            p.add_anomaly("decoder.udp.hlen_too_small")
            return
        if ulen > avail:
            p.add_anomaly("decoder.udp.hlen_invalid")
            ulen = avail
        p.sport = (b[i] << 8) | b[i + 1]
        p.dport = (b[i + 2] << 8) | b[i + 3]
        p.payload = b[i + 8 : i + ulen]
    elif proto in (PROTO_ICMP, PROTO_ICMPV6):
        if avail < 4:
            p.add_anomaly(
                "decoder.icmpv4.pkt_too_small"
                if proto == PROTO_ICMP
                else "decoder.icmpv6.pkt_too_small"
            )
            return
        p.icmp_type, p.icmp_code = b[i], b[i + 1]
        if proto == PROTO_ICMP and p.ip_version != 4:
            p.add_anomaly("decoder.ipv6.with_icmpv4")
        p.payload = b[i + 4 : end]
    else:
        p.payload = b[i:end]


def _tcp_options(p: Packet, b: bytes, i: int, end: int) -> None:
    opts: dict[int, bytes] = {}
    p.tcp_options = opts  # filled in place: what was read before a bad option stays
    while i < end:
        k = b[i]
        if k == 0:
            return
        if k == 1:
            i += 1
            continue
        if i + 1 >= end:
            p.add_anomaly("decoder.tcp.opt_invalid_len")
            return
        olen = b[i + 1]
        if olen < 2 or i + olen > end:
            p.add_anomaly("decoder.tcp.opt_invalid_len")
            return
        if k in opts:
            p.add_anomaly("decoder.tcp.opt_duplicate")
        opts[k] = b[i + 2 : i + olen]
        i += olen
