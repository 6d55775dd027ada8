"""Flow table: keys, direction, community-id vectors, Suricata flow_id, timeouts, the cap."""

from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from vmshield.engines.net.decode import decode
from vmshield.engines.net.flow import STATE_CLOSED, STATE_ESTABLISHED, FlowTable, community_id


def _a(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in s else socket.AF_INET, s)


# Published vectors (community-id-spec README and its reference test data).
@pytest.mark.parametrize(
    "src,dst,proto,sport,dport,expected",
    [
        ("128.232.110.120", "66.35.250.204", 6, 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
        ("66.35.250.204", "128.232.110.120", 6, 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
        ("192.168.1.52", "8.8.8.8", 17, 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
        (
            "2001:470:e5bf:dead:4957:2174:e82c:4887",
            "2607:f8b0:400c:c03::1a",
            6,
            63943,
            25,
            "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
        ),
        ("192.168.0.89", "192.168.0.1", 1, 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
        (
            "3ffe:501:0:1802:260:97ff:feb6:7ff0",
            "3ffe:507:0:1:200:86ff:fe05:80da",
            58,
            3,
            0,
            "1:bnQKq8A2r//dWnkRW2EYcMhShjc=",
        ),
    ],
)
def test_community_id_vectors(
    src: str, dst: str, proto: int, sport: int, dport: int, expected: str
) -> None:
    assert community_id(_a(src), _a(dst), proto, sport, dport) == expected


def _p(
    src: str, dst: str, sport: int, dport: int, flags: str = "A", ts: float = 100.0, vlan: int = 0
):  # type: ignore[no-untyped-def]
    l2 = Ether() / Dot1Q(vlan=vlan) if vlan else Ether()
    return decode(bytes(l2 / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)), ts)


def test_both_directions_share_a_flow_and_direction_is_known() -> None:
    t = FlowTable()
    f1, d1 = t.get_or_create(_p("10.0.0.1", "10.0.0.2", 1000, 80, "S"))
    f2, d2 = t.get_or_create(_p("10.0.0.2", "10.0.0.1", 80, 1000, "SA"))
    assert f1 is f2 and d1 is True and d2 is False
    assert len(t) == 1
    # Different VLAN: a different flow (overlapping address plans in different segments).
    f3, _ = t.get_or_create(_p("10.0.0.1", "10.0.0.2", 1000, 80, "S", vlan=5))
    assert f3 is not f1


def test_flow_id_is_suricata_layout_and_stable() -> None:
    t = FlowTable()
    p = _p("10.0.0.1", "10.0.0.2", 1000, 80, "S", ts=1_700_000_123.456789)
    f, _ = t.get_or_create(p)
    assert 0 < f.flow_id < 2**51
    assert f.flow_id & 0xFFFFFFFF == f.hash
    assert (f.flow_id >> 32) & 0xFFFF == 456789 & 0xFFFF
    assert f.community_id == community_id(p.src_bytes, p.dst_bytes, 6, 1000, 80)


def test_tcp_states_and_timeouts() -> None:
    t = FlowTable(timeouts={6: (5.0, 50.0, 1.0)})
    c = ("10.0.0.1", "10.0.0.2", 1000, 80)
    s = ("10.0.0.2", "10.0.0.1", 80, 1000)
    for (src, dst, sp, dp), fl in ((c, "S"), (s, "SA"), (c, "A")):
        p = _p(src, dst, sp, dp, fl)
        f, d = t.get_or_create(p)
        f.update(p, d)
    assert f.state == STATE_ESTABLISHED
    assert t.expire(100.0 + 49) == []
    assert t.expire(100.0 + 51) == [f]
    # A new flow that only saw a SYN expires with the short "new" timeout.
    p = _p("10.0.0.3", "10.0.0.2", 1, 2, "S")
    g, d = t.get_or_create(p)
    g.update(p, d)
    assert t.expire(106.0) == [g]


def test_rst_closes() -> None:
    t = FlowTable()
    p = _p("10.0.0.1", "10.0.0.2", 1, 2, "S")
    f, d = t.get_or_create(p)
    f.update(p, d)
    r = _p("10.0.0.2", "10.0.0.1", 2, 1, "R")
    f.update(r, False)
    assert f.state == STATE_CLOSED


def test_cap_evicts_and_reports_the_evicted_flows() -> None:
    t = FlowTable(max_flows=100)
    for i in range(250):
        p = decode(
            bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=53)),
            100.0,
        )
        f, d = t.get_or_create(p)
        f.update(p, d)
    assert len(t) <= 100
    assert t.emergency and t.emergency_entered == 1
    ended = t.expire(100.0)
    # Nothing disappears silently: 250 created, the evicted ones come back from expire().
    assert len(ended) + len(t) == 250
    assert t.evicted == len(ended)


def test_icmp_echo_and_reply_share_a_flow() -> None:
    t = FlowTable()
    a = decode(bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8)), 0)
    b = decode(bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(type=0)), 0)
    fa, da = t.get_or_create(a)
    fb, db = t.get_or_create(b)
    assert fa is fb and da and not db


@pytest.mark.parametrize("max_flows", [65536, 48])
def test_expiry_plan_ends_each_flow_when_a_full_scan_would(max_flows: int) -> None:
    # Expiry looks only at the flows planned for the seconds gone by (not the whole table):
    # over random traffic (TCP opening, established, closing, reset; UDP one way and both
    # ways; ICMP), every pass must end exactly the flows idle past their timeout in their
    # current state, as a scan of every flow does. With a small table, the table goes in and
    # out of emergency mode (short timeouts) on the way.
    import random

    rng = random.Random(5)
    t = FlowTable(
        max_flows=max_flows,
        timeouts={6: (4.0, 30.0, 2.0), 17: (3.0, 12.0, 0.0), 1: (2.0, 9.0, 0.0)},
        emergency_timeouts={6: (2.0, 6.0, 1.0), 17: (1.0, 5.0, 0.0), 1: (1.0, 3.0, 0.0)},
    )
    hosts = [f"10.1.0.{i}" for i in range(1, 9)]
    frames = []
    for i in range(40):
        a, b = rng.sample(hosts, 2)
        frames.append((Ether() / IP(src=a, dst=b) / TCP(sport=1000 + i, dport=80, flags="S"), 0))
        frames.append((Ether() / IP(src=b, dst=a) / TCP(sport=80, dport=1000 + i, flags="SA"), 1))
        frames.append((Ether() / IP(src=a, dst=b) / TCP(sport=1000 + i, dport=80, flags="A"), 0))
        frames.append((Ether() / IP(src=a, dst=b) / TCP(sport=1000 + i, dport=80, flags="FA"), 0))
        frames.append((Ether() / IP(src=b, dst=a) / TCP(sport=80, dport=1000 + i, flags="FA"), 1))
        frames.append((Ether() / IP(src=b, dst=a) / TCP(sport=80, dport=1000 + i, flags="R"), 1))
        frames.append((Ether() / IP(src=a, dst=b) / UDP(sport=2000 + i, dport=53), 0))
        frames.append((Ether() / IP(src=b, dst=a) / UDP(sport=53, dport=2000 + i), 1))
        frames.append((Ether() / IP(src=a, dst=b) / ICMP(type=8, id=i), 0))
    raw = [bytes(f) for f, _ in frames]
    now = 100.0
    ended_total = 0
    for _ in range(3000):
        now += rng.choice((0.0, 0.05, 0.3, 1.0, 2.5))
        p = decode(rng.choice(raw), now)
        f, d = t.get_or_create(p)
        f.update(p, d)
        if rng.random() < 0.05:
            live = {id(g) for g in t.flows.values()}
            table = t.emergency_timeouts if t.emergency else t.timeouts
            expected = {id(g) for g in t.flows.values() if now - g.last >= t._timeout(g, table)}
            ended = t.expire(now)
            # Flows the cap pushed out earlier come back too; the rest must be the expired.
            assert {id(g) for g in ended if id(g) in live} == expected
            ended_total += len(ended)
    assert ended_total > 100
    if max_flows < 100:
        assert t.emergency_entered > 1  # in and out of emergency mode more than once
    later = now + 1000.0
    assert len(t.expire(later)) > 0 and len(t) == 0


def test_expiry_plan_stays_bounded_under_a_flood_through_a_full_table() -> None:
    # A flood through a full table ends flows early (evicted); their plan entries must not
    # pile up until their second comes.
    t = FlowTable(max_flows=64)
    for i in range(5000):
        p = decode(
            bytes(Ether() / IP(src="10.2.0.1", dst="10.2.0.2") / UDP(sport=1024 + i, dport=9)),
            100.0 + i * 0.001,
        )
        f, d = t.get_or_create(p)
        f.update(p, d)
        assert t._planned <= 2 * t.max_flows + 1
        t.pending_ended.clear()
    assert len(t) <= 64
