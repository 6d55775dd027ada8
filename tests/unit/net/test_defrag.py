"""Defragmentation: reassembly in any order, overlaps (teardrop), oversize (ping of death), caps."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from vmshield.engines.net.decode import decode
from vmshield.engines.net.defrag import Defragmenter


def _frags(payload: bytes, size: int = 64) -> list[bytes]:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=4242) / UDP(sport=5000, dport=53) / Raw(payload)
    return [bytes(Ether() / f) for f in fragment(pkt, fragsize=size)]


def test_in_order_and_reverse_order() -> None:
    data = bytes(range(256)) * 2
    for order in (1, -1):
        d = Defragmenter()
        out = None
        frames = _frags(data)[::order]
        for i, f in enumerate(frames):
            p = decode(f, float(i))
            assert p.is_fragment
            out = d.add(p)
            if i < len(frames) - 1:
                assert out is None
        assert out is not None
        assert out.proto == 17 and out.dport == 53 and bytes(out.payload) == data
        assert not out.is_fragment and len(d) == 0


def test_overlap_is_reported_and_first_wins() -> None:
    # Teardrop-style: the second fragment starts inside the first with different bytes.
    a = IP(src="10.0.0.1", dst="10.0.0.2", id=7, flags="MF", frag=0, proto=17) / Raw(b"A" * 48)
    b = IP(src="10.0.0.1", dst="10.0.0.2", id=7, frag=3, proto=17) / Raw(b"B" * 40)
    d = Defragmenter()
    assert d.add(decode(bytes(Ether() / a), 0)) is None
    pb = decode(bytes(Ether() / b), 0)
    out = d.add(pb)
    assert "decoder.ipv4.frag_overlap" in pb.anomalies
    assert d.stats["overlaps"] == 1
    assert out is not None
    data = bytes(out.raw[20:])
    assert data[:48] == b"A" * 48  # first wins
    assert data[48:] == b"B" * 16  # only the part nobody had sent before


def test_ping_of_death_is_oversize_and_never_reassembled() -> None:
    d = Defragmenter()
    big = IP(src="10.0.0.9", dst="10.0.0.2", id=99, proto=1, frag=8189, flags=0) / Raw(b"x" * 100)
    first = IP(src="10.0.0.9", dst="10.0.0.2", id=99, proto=1, flags="MF") / ICMP() / Raw(b"y" * 64)
    assert d.add(decode(bytes(Ether() / first), 0)) is None
    p = decode(bytes(Ether() / big), 0)
    assert d.add(p) is None
    assert "decoder.ipv4.frag_pkt_too_large" in p.anomalies
    assert d.stats["too_large"] == 1 and d.held == 0


def test_timeout_drops_incomplete() -> None:
    d = Defragmenter(timeout=30)
    frames = _frags(b"z" * 300)
    d.add(decode(frames[0], 0.0))
    assert len(d) == 1
    assert d.expire(29.0) == 0
    assert d.expire(31.0) == 1 and len(d) == 0 and d.held == 0


def test_memcap_bounds_memory() -> None:
    d = Defragmenter(memcap=2000)
    for i in range(50):
        pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=i, flags="MF", proto=17) / Raw(b"q" * 200)
        d.add(decode(bytes(Ether() / pkt), 0))
    assert d.held <= 2000
    assert d.stats["memcap_drops"] > 0


def test_too_many_fragments_is_refused() -> None:
    d = Defragmenter(max_frags=10)
    last = None
    for i in range(20):
        pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=1, flags="MF", frag=i, proto=17) / Raw(
            b"12345678"
        )
        last = decode(bytes(Ether() / pkt), 0)
        d.add(last)
    assert d.stats["max_frags_drops"] >= 1
    assert last is not None


def test_ipv6_fragments() -> None:
    payload = b"v6" * 300
    pkt = (
        IPv6(src="2001:db8::1", dst="2001:db8::2")
        / IPv6ExtHdrFragment(id=5)
        / UDP(sport=1, dport=2)
        / Raw(payload)
    )
    frags = fragment6(pkt, 200)
    d = Defragmenter()
    out = None
    for f in frags:
        p = decode(bytes(Ether() / f), 0)
        assert p.is_fragment and p.ip_version == 6
        out = d.add(p) or out
    assert out is not None and out.proto == 17 and bytes(out.payload) == payload


def test_ipv6_overlap() -> None:
    base = IPv6(src="2001:db8::1", dst="2001:db8::2")
    a = base / IPv6ExtHdrFragment(id=9, offset=0, m=1, nh=17) / Raw(b"a" * 64)
    b = base / IPv6ExtHdrFragment(id=9, offset=4, m=0, nh=17) / Raw(b"b" * 64)
    d = Defragmenter()
    d.add(decode(bytes(Ether() / a), 0))
    pb = decode(bytes(Ether() / b), 0)
    d.add(pb)
    assert "decoder.ipv6.frag_overlap" in pb.anomalies
