"""Decoder: every layer it claims, and malformed input as anomalies, never exceptions."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from vmshield.engines.net.decode import LINKTYPE_LINUX_SLL, LINKTYPE_RAW, decode
from vmshield.engines.net.packet import ACK, PSH, SYN


def test_ethernet_ipv4_tcp_with_options() -> None:
    f = bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2", ttl=61, id=777)
        / TCP(
            sport=1234,
            dport=80,
            flags="PA",
            seq=10,
            ack=20,
            options=[("MSS", 1460), ("NOP", None), ("WScale", 7)],
        )
        / Raw(b"hello")
    )
    p = decode(f, 1.5)
    assert (p.src, p.dst, p.sport, p.dport, p.proto) == ("10.0.0.1", "10.0.0.2", 1234, 80, 6)
    assert p.ttl == 61 and p.ip_id == 777
    assert p.tcp_flags == PSH | ACK and p.tcp_seq == 10 and p.tcp_ack == 20
    assert bytes(p.payload) == b"hello"
    assert p.tcp_options[2] == struct.pack("!H", 1460)
    assert p.tcp_options[3] == b"\x07"
    assert p.eth_src == bytes.fromhex("020000000001")
    assert not p.anomalies


def test_ethernet_padding_is_not_payload() -> None:
    # A minimum-size Ethernet frame pads a tiny IP packet; the padding is not TCP payload.
    f = bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="S")) + b"\x00" * 6
    p = decode(f, 0)
    assert p.payload == b"" and not p.anomalies


def test_vlan_and_qinq() -> None:
    p = decode(
        bytes(Ether() / Dot1Q(vlan=42) / IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=2)),
        0,
    )
    assert p.vlan == 42 and p.proto == 17 and p.dport == 2
    q = decode(
        bytes(
            Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=7) / IP(src="1.1.1.1", dst="2.2.2.2") / UDP()
        ),
        0,
    )
    assert q.vlan == 100 and q.proto == 17
    three = bytes(Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP() / UDP())
    assert "decoder.vlan.too_many_layers" in decode(three, 0).anomalies


def test_arp() -> None:
    p = decode(bytes(Ether() / ARP(psrc="10.0.0.1", pdst="10.0.0.9")), 0)
    assert p.eth_type == 0x0806 and p.src == "10.0.0.1" and p.dst == "10.0.0.9" and p.proto == 0


def test_ipv6_extension_headers_and_icmpv6() -> None:
    f = bytes(
        Ether()
        / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=9)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / TCP(sport=5, dport=443, flags="S")
    )
    p = decode(f, 0)
    assert p.ip_version == 6 and p.proto == 6 and p.dport == 443 and p.ttl == 9
    assert p.src == "2001:db8::1"
    i = decode(bytes(Ether() / IPv6(src="::1", dst="::2") / ICMPv6EchoRequest()), 0)
    assert i.proto == 58 and i.icmp_type == 128


def test_icmp_and_raw_ip_linktype() -> None:
    raw = bytes(IP(src="192.168.1.1", dst="192.168.1.2") / ICMP(type=8, code=0) / b"ping")
    p = decode(raw, 0, LINKTYPE_RAW)
    assert p.icmp_type == 8 and p.icmp_code == 0 and p.proto == 1
    raw6 = bytes(IPv6(src="::1", dst="::2") / UDP(sport=9, dport=53))
    assert decode(raw6, 0, LINKTYPE_RAW).dport == 53


def test_linux_sll() -> None:
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800)
    p = decode(sll + bytes(IP(src="1.2.3.4", dst="5.6.7.8") / UDP(dport=99)), 0, LINKTYPE_LINUX_SLL)
    assert p.dport == 99


def test_truncated_ipv4_is_an_anomaly() -> None:
    f = bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP() / Raw(b"x" * 100))
    p = decode(f[:40], 0)
    assert "decoder.ipv4.trunc_pkt" in p.anomalies


def test_malformed_headers() -> None:
    eth = bytes(Ether(type=0x0800))[:14]
    assert decode(eth[:10], 0).anomalies == ("decoder.ethernet.pkt_too_small",)
    assert "decoder.ipv4.pkt_too_small" in decode(eth + b"\x45\x00", 0).anomalies
    bad_hlen = bytearray(bytes(Ether() / IP() / UDP()))
    bad_hlen[14] = 0x43  # IHL 3: 12 bytes
    assert "decoder.ipv4.hlen_too_small" in decode(bytes(bad_hlen), 0).anomalies
    bad_ver = bytearray(bytes(Ether() / IP() / UDP()))
    bad_ver[14] = 0x55
    assert "decoder.ipv4.wrong_ip_version" in decode(bytes(bad_ver), 0).anomalies
    tcp = bytearray(bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP()))
    tcp[14 + 20 + 12] = 0x30  # data offset 3 words
    assert "decoder.tcp.hlen_too_small" in decode(bytes(tcp), 0).anomalies
    opt = bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(options=[("MSS", 1)]))
    bad = bytearray(opt)
    bad[14 + 20 + 21] = 40  # MSS option claiming 40 bytes
    assert "decoder.tcp.opt_invalid_len" in decode(bytes(bad), 0).anomalies
    udp = bytearray(bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / UDP()))
    struct.pack_into("!H", udp, 14 + 20 + 4, 4)
    assert "decoder.udp.hlen_too_small" in decode(bytes(udp), 0).anomalies
    v6 = bytes(Ether() / IPv6() / UDP())
    assert "decoder.ipv6.pkt_too_small" in decode(v6[:40], 0).anomalies


def test_syn_flags() -> None:
    p = decode(bytes(Ether() / IP(src="1.1.1.1", dst="2.2.2.2") / TCP(flags="S")), 0)
    assert p.tcp_flags == SYN


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([0, 1, 12, 101, 113, 228, 229, 999]))
def test_never_raises(data: bytes, linktype: int) -> None:
    decode(data, 0.0, linktype)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=80), st.binary(min_size=1, max_size=4))
def test_corrupting_a_valid_frame_never_raises(pos: int, junk: bytes) -> None:
    f = bytearray(
        bytes(Ether() / IP(options=b"\x01\x01\x01\x00") / TCP(options=[("MSS", 1)]) / b"abc")
    )
    f[pos : pos + len(junk)] = junk
    decode(bytes(f), 0.0)
