"""The decoded packet: what the decoder hands to defrag, flow, stream and the detectors.

One model for every stage. Fields a layer did not have stay at their defaults (`proto` 0 for a
non-IP frame, `sport`/`dport` 0 without ports). `payload` is the L4 payload (or the IP payload for
other protocols), as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# IP protocol numbers used throughout the engine.
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

# TCP flag bits.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


@dataclass(slots=True)
class Packet:
    ts: float  # capture time, seconds since the epoch
    raw: bytes  # the whole frame as received (Ethernet, or IP for raw-IP captures / NFQUEUE)
    linktype: int = 1  # pcap DLT: 1 Ethernet, 101/228/229 raw IP
    iface: str = ""  # interface or bridge port it was seen on (scopes blocking)
    vlan: int = 0  # 802.1Q VLAN id, 0 when untagged
    # L2
    eth_src: bytes = b""
    eth_dst: bytes = b""
    eth_type: int = 0
    # L3
    ip_version: int = 0  # 4, 6, or 0 (ARP, other)
    src: str = ""  # textual address (ipaddress-compatible)
    dst: str = ""
    src_bytes: bytes = b""  # packed address, for hashing and sets
    dst_bytes: bytes = b""
    proto: int = 0  # IPv4 protocol / IPv6 next header after extension headers
    ttl: int = 0  # TTL or hop limit
    ip_id: int = 0
    ip_len: int = 0  # total length of the IP datagram as seen
    ip_hdr: bytes = b""  # the IPv4 header with options, or the IPv6 fixed header (ipv4.hdr buffer)
    frag_offset: int = 0  # in bytes
    more_fragments: bool = False
    is_fragment: bool = False  # a fragment (before reassembly); the reassembled datagram is not
    reassembled: bool = False  # the datagram rebuilt from fragments (rule keyword flow:only_frag)
    # L4
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    tcp_seq: int = 0
    tcp_ack: int = 0
    tcp_win: int = 0
    tcp_hdr: bytes = b""  # TCP header with options (tcp.hdr buffer)
    tcp_options: dict[int, bytes] = field(default_factory=dict)
    icmp_type: int = -1
    icmp_code: int = -1
    payload: bytes = b""
    # Decoder anomalies, Suricata's names where it has one (e.g. "ipv4.trunc_pkt").
    anomalies: list[str] = field(default_factory=list)

    @property
    def dsize(self) -> int:
        return len(self.payload)
