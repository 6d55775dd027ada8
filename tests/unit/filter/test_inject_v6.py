"""Active responses for IPv6 and inside a VLAN, checked against scapy's own decoding."""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from typing import Any

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from vmshield.filter.inject import Injector, TcpView, block_page_response, tcp_packet

CLIENT = ipaddress.ip_address("fd00:231::11").packed
SERVER = ipaddress.ip_address("fd00:231::12").packed


class _Sock:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, frame: bytes, addr: Any) -> None:
        self.sent.append((frame, addr))

    def close(self) -> None:
        pass


def _injector(monkeypatch: Any) -> tuple[Injector, _Sock]:
    inj = Injector.__new__(Injector)  # no AF_PACKET socket: frames are captured instead
    inj._hosts = OrderedDict()
    inj._max = 16
    inj._names = {7: "port-c", 8: "port-s"}
    inj.sent = 0
    inj.sock = _Sock()  # type: ignore[assignment]
    return inj, inj.sock  # type: ignore[return-value]


def _valid(seg: bytes) -> IPv6:
    pkt = IPv6(seg)
    sent_sum = pkt[TCP].chksum
    del pkt[TCP].chksum
    assert IPv6(bytes(pkt))[TCP].chksum == sent_sum, "bad TCP checksum"
    return pkt


def test_ipv6_segment_is_well_formed_and_parsed_back() -> None:
    seg = tcp_packet(SERVER, CLIENT, 443, 50000, 7000, 9000, 0x18, b"data", window=100)
    pkt = _valid(seg)
    assert pkt.plen == 20 + 4 and pkt.nh == 6 and pkt.src == "fd00:231::12"
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].seq, pkt[TCP].ack) == (443, 50000, 7000, 9000)
    t = TcpView.parse(seg)
    assert t is not None and (t.src, t.dst, t.payload_len, t.flags) == (SERVER, CLIENT, 4, 0x18)
    # Behind an extension header: no view (the packet is only dropped, never answered wrongly).
    hop = seg[:6] + b"\x00" + seg[7:40] + struct.pack("!BB6x", 6, 0) + seg[40:]
    assert TcpView.parse(hop) is None


def test_ipv6_reset_reaches_both_sides_with_the_sequence_numbers_they_accept(
    monkeypatch: Any,
) -> None:
    inj, sock = _injector(monkeypatch)
    inj.learn(CLIENT, b"\x02\0\0\0\0\x11", 7)
    inj.learn(SERVER, b"\x02\0\0\0\0\x12", 8, vlan=300)
    # The client's request (12 bytes at seq 1000, acking 5000) is being dropped.
    req = tcp_packet(CLIENT, SERVER, 50000, 443, 1000, 5000, 0x18, b"GET / HTTP/1")
    t = TcpView.parse(req)
    assert t is not None
    assert inj.reset_both(t) == 2
    (to_client, a1), (to_server, a2) = sock.sent
    assert a1 == ("port-c", 0x86DD) and a2 == ("port-s", 0x86DD)
    c = Ether(to_client)
    assert c.dst == "02:00:00:00:00:11" and c.type == 0x86DD
    rst_c = _valid(bytes(c[IPv6]))
    assert (rst_c.src, rst_c.dst) == ("fd00:231::12", "fd00:231::11")
    assert rst_c[TCP].flags == "RA" and rst_c[TCP].seq == 5000 and rst_c[TCP].ack == 1012
    # The server is in VLAN 300: its RST carries the tag.
    s = Ether(to_server)
    assert s.type == 0x8100 and s[Dot1Q].vlan == 300 and s[Dot1Q].type == 0x86DD
    rst_s = _valid(bytes(s[IPv6]))
    assert rst_s[TCP].flags == "RA" and rst_s[TCP].seq == 1000


def test_ipv6_block_page_is_sent_to_the_client(monkeypatch: Any) -> None:
    inj, sock = _injector(monkeypatch)
    inj.learn(CLIENT, b"\x02\0\0\0\0\x11", 7)
    inj.learn(SERVER, b"\x02\0\0\0\0\x12", 8)
    req = tcp_packet(CLIENT, SERVER, 50000, 80, 1000, 5000, 0x18, b"GET /x HTTP/1.1\r\n\r\n")
    t = TcpView.parse(req)
    assert t is not None
    page = block_page_response("http://bad.example/x", "malware", "url db", "ev1")
    n = inj.block_page(t, page)
    assert n == len(sock.sent) >= 2
    body = b""
    for frame, _ in sock.sent[:-1]:
        seg = _valid(bytes(Ether(frame)[IPv6]))
        body += bytes(seg[TCP].payload)
    assert body == page
