"""DNS parser: queries, answers, rcode, compression, TCP framing, hostile messages."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR

from vmshield.engines.net.app.dns import DnsError, DnsTcpParser, parse_message


def test_query() -> None:
    m = parse_message(bytes(DNS(id=77, rd=1, qd=DNSQR(qname="www.example.com", qtype="AAAA"))))
    assert not m.is_response and m.id == 77
    assert [(q.rrname, q.type_name) for q in m.queries] == [("www.example.com", "AAAA")]
    e = m.eve(3)
    assert e["type"] == "query" and e["rrname"] == "www.example.com" and e["rrtype"] == "AAAA"
    assert e["tx_id"] == 3


def test_answer_with_compression_and_rcode() -> None:
    ans = DNS(
        id=1,
        qr=1,
        rd=1,
        ra=1,
        qd=DNSQR(qname="example.com"),
        an=[
            DNSRR(rrname="example.com", type="CNAME", rdata="edge.example.net", ttl=60),
            DNSRR(rrname="edge.example.net", type="A", rdata="93.184.216.34", ttl=300),
        ],
    )
    m = parse_message(bytes(ans))
    assert m.is_response and m.rcode_name == "NOERROR"
    assert [(a.type_name, a.rdata, a.ttl) for a in m.answers] == [
        ("CNAME", "edge.example.net", 60),
        ("A", "93.184.216.34", 300),
    ]
    e = m.eve()
    assert e["type"] == "answer" and e["rcode"] == "NOERROR" and e["rd"] and e["ra"]
    assert e["grouped"]["A"] == ["93.184.216.34"]
    nx = parse_message(bytes(DNS(id=2, qr=1, rcode=3, qd=DNSQR(qname="nope.example"))))
    assert nx.rcode_name == "NXDOMAIN" and nx.eve()["rcode"] == "NXDOMAIN"


def test_tcp_framing_split_and_joined() -> None:
    q1 = bytes(DNS(id=1, qd=DNSQR(qname="a.example")))
    q2 = bytes(DNS(id=2, qd=DNSQR(qname="b.example")))
    stream = struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2
    p = DnsTcpParser()
    out = []
    for i in range(0, len(stream), 5):
        out += p.feed(stream[i : i + 5])
    assert [m.queries[0].rrname for m in out] == ["a.example", "b.example"]


def test_pointer_loop_is_an_error_not_a_hang() -> None:
    hdr = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0)
    msg = hdr + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # name points at itself
    with pytest.raises(DnsError, match="loop"):
        parse_message(msg)


def test_short_and_truncated() -> None:
    with pytest.raises(DnsError, match="12-byte header"):
        parse_message(b"\x00\x01")
    with pytest.raises(DnsError):
        parse_message(struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_only_dns_error_on_garbage(data: bytes) -> None:
    try:
        parse_message(data)
    except DnsError:
        pass
