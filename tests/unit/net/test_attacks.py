"""Network attack detection: each attack from packets the test builds, and normal traffic that
must raise nothing. Packets go through the real decoder (and the real defragmenter for
fragments), as in the engine."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet as ScapyPacket
from scapy.packet import Raw

from vmshield.engines.net.attacks import AttackConfig, AttackDetector, AttackVerdict
from vmshield.engines.net.decode import decode
from vmshield.engines.net.defrag import Defragmenter
from vmshield.engines.net.packet import Packet

ATTACKER = "10.0.0.66"
VICTIM = "10.0.0.5"
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"


def frame(layer: ScapyPacket, dst_mac: str = MAC_B) -> bytes:
    return bytes(Ether(src=MAC_A, dst=dst_mac) / layer)


def run(
    det: AttackDetector,
    layers: Iterable[ScapyPacket | bytes],
    start: float = 1_700_000_000.0,
    step: float = 0.001,
    defrag: Defragmenter | None = None,
) -> list[AttackVerdict]:
    """Decode each frame, defragment like the engine does, and feed the detector."""
    out: list[AttackVerdict] = []
    ts = start
    for layer in layers:
        raw = layer if isinstance(layer, bytes) else frame(layer)
        p = decode(raw, ts)
        whole = defrag.add(p) if p.is_fragment and defrag is not None else None
        out += det.process(p)  # after defrag, as the engine does: it names overlap/oversize
        if whole is not None:
            out += det.process(whole)
        ts += step
    return out


def variants(layer: ScapyPacket, n: int, patch: object) -> list[bytes]:
    """n copies of one frame with bytes patched per copy (fast: scapy builds the frame once).
    Offsets are those of Ethernet + IPv4 without options: source 26, sport 34, dport 36."""
    base = frame(layer)
    out = []
    for i in range(n):
        b = bytearray(base)
        for off, val in patch(i).items():  # type: ignore[operator]
            b[off : off + len(val)] = val
        out.append(bytes(b))
    return out


def names(verdicts: list[AttackVerdict]) -> list[str]:
    """The attacks reported: verdicts that carry an event (one per episode)."""
    return [v.name for v in verdicts if v.event is not None]


def reported(verdicts: list[AttackVerdict]) -> list[AttackVerdict]:
    return [v for v in verdicts if v.event is not None]


# -- scans -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "style"),
    [("S", "SYN"), ("F", "FIN"), ("", "NULL"), ("FPU", "Xmas"), ("A", "ACK")],
)
def test_tcp_port_scan_each_style_is_one_episode(flags: str, style: str) -> None:
    det = AttackDetector()
    probes = [
        IP(src=ATTACKER, dst=VICTIM) / TCP(sport=40000, dport=port, flags=flags)
        for port in range(1, 201)
    ]
    found = run(det, probes)
    scans = [v for v in reported(found) if v.name == "Scan.Generic.PortScan.TCP"]
    assert len(scans) == 1  # one event for 200 probes
    # Every probe from the threshold on is an attack packet with the same action.
    later = [v for v in found if v.event is None and v.name == scans[0].name]
    assert len(later) == 200 - 20 and {(v.action, v.block_minutes) for v in later} == {
        ("block", 60)
    }
    v = scans[0]
    assert (v.source, v.target, v.action, v.block_minutes) == (ATTACKER, VICTIM, "block", 60)
    eve = v.event.to_eve()
    assert eve["event_type"] == "attack"
    assert (eve["src_ip"], eve["dest_ip"], eve["proto"]) == (ATTACKER, VICTIM, "TCP")
    assert eve["attack"]["style"] == style and eve["attack"]["ports"] == 20
    assert eve["attack"]["action"] == "block" and eve["attack"]["block_minutes"] == 60
    # The episode keeps counting what the event no longer repeats.
    (ep,) = [e for e in det.active_episodes() if e["name"] == "Scan.Generic.PortScan.TCP"]
    assert ep["count"] == 200 - 20 + 1


def test_udp_port_scan() -> None:
    det = AttackDetector()
    found = run(det, [IP(src=ATTACKER, dst=VICTIM) / UDP(sport=5353, dport=p) for p in range(100)])
    assert names(found) == ["Scan.Generic.PortScan.UDP"]
    assert found[0].event.data["attack"]["ports"] == 20


def test_tcp_port_sweep_of_a_worm() -> None:
    det = AttackDetector()
    sweep = [IP(src=ATTACKER, dst=f"10.0.2.{i}") / TCP(dport=445, flags="S") for i in range(1, 60)]
    found = run(det, sweep, step=0.01)
    assert names(found) == ["Scan.Generic.PortSweep.TCP"]
    assert found[0].event.data["attack"] == found[0].event.data["attack"] | {
        "hosts": 30,
        "port": 445,
    }


def test_udp_port_sweep_but_not_polling_hosts_that_answer() -> None:
    det = AttackDetector()
    polls: list[ScapyPacket] = []
    for i in range(1, 60):  # an SNMP poller: every agent answers
        polls.append(IP(src="10.0.0.10", dst=f"10.0.3.{i}") / UDP(sport=40000, dport=161))
        polls.append(IP(src=f"10.0.3.{i}", dst="10.0.0.10") / UDP(sport=161, dport=40000))
    assert run(det, polls) == []
    worm = [IP(src=ATTACKER, dst=f"10.0.4.{i}") / UDP(sport=1, dport=1434) for i in range(1, 60)]
    found = run(det, worm)
    assert names(found) == ["Scan.Generic.PortSweep.UDP"]
    assert found[0].event.data["attack"]["port"] == 1434


def test_icmp_host_sweep() -> None:
    det = AttackDetector()
    sweep = [IP(src=ATTACKER, dst=f"10.0.1.{i}") / ICMP(type=8, id=1, seq=i) for i in range(1, 60)]
    found = run(det, sweep, step=0.01)
    assert names(found) == ["Scan.Generic.HostSweep.ICMP"]
    assert found[0].target == "" and found[0].event.data["attack"]["hosts"] == 20


def test_slow_probes_below_the_window_are_not_a_scan() -> None:
    det = AttackDetector()
    probes = [IP(src=ATTACKER, dst=VICTIM) / TCP(dport=p, flags="S") for p in range(1, 60)]
    assert run(det, probes, step=1.0) == []  # 5 ports per 5 s window


# -- floods ----------------------------------------------------------------------------------


def test_syn_flood_half_open() -> None:
    det = AttackDetector()
    rng = random.Random(7)
    syns = variants(
        IP(src=ATTACKER, dst=VICTIM) / TCP(dport=80, flags="S"),
        1500,
        lambda i: {34: rng.randint(1024, 65535).to_bytes(2, "big")},
    )
    found = run(det, syns, step=0.0002)
    assert names(found) == ["DoS.Generic.SYNFlood"]
    assert found[0].action == "block" and found[0].event.data["attack"]["half_open"] == 500
    assert found[0].event.severity == 1


def test_distributed_syn_flood_is_one_episode_per_target() -> None:
    det = AttackDetector()
    rng = random.Random(5)
    syns = variants(
        IP(src="10.9.0.1", dst=VICTIM) / TCP(dport=443, flags="S"),
        3000,
        lambda i: {26: bytes([10, 9, *rng.randbytes(2)]), 34: rng.randbytes(2)},
    )
    found = run(det, syns, step=0.0002)
    assert names(found) == ["DoS.Generic.SYNFlood"]
    v = found[0]
    assert v.event.data["attack"]["distributed"] is True and v.target == VICTIM
    assert (v.source, v.action) == ("", "ignore")  # no single source to block


def test_many_completed_handshakes_are_not_a_syn_flood() -> None:
    # A load test: 800 connections in 0.8 s, each completing its handshake.
    det = AttackDetector()
    syn, synack, ack = (
        variants(
            IP(src=a, dst=b) / TCP(sport=sp, dport=dp, flags=f),
            800,
            lambda i, o=o: {o: (20000 + i).to_bytes(2, "big")},
        )
        for a, b, sp, dp, f, o in (
            (ATTACKER, VICTIM, 1, 80, "S", 34),
            (VICTIM, ATTACKER, 80, 1, "SA", 36),
            (ATTACKER, VICTIM, 1, 80, "A", 34),
        )
    )
    pkts = [x for trio in zip(syn, synack, ack, strict=True) for x in trio]
    assert run(det, pkts, step=0.0003) == []


def test_udp_flood() -> None:
    det = AttackDetector()
    flood = [
        frame(IP(src=ATTACKER, dst=VICTIM) / UDP(sport=1234, dport=9999) / Raw(b"x" * 16))
    ] * 6000
    found = run(det, flood, step=0.0001)
    assert names(found) == ["DoS.Generic.UDPFlood"]


def test_icmp_flood() -> None:
    det = AttackDetector()
    flood = variants(
        IP(src=ATTACKER, dst=VICTIM) / ICMP(type=8, id=1),
        1200,
        lambda i: {40: i.to_bytes(2, "big")},
    )
    found = run(det, flood, step=0.0005)
    assert names(found) == ["DoS.Generic.ICMPFlood"]


def test_icmp_error_flood_blacknurse() -> None:
    det = AttackDetector()
    flood = [frame(IP(src=ATTACKER, dst=VICTIM) / ICMP(type=3, code=3))] * 800
    found = run(det, flood, step=0.0005)
    assert names(found) == ["DoS.Generic.ICMPFlood"]
    assert found[0].event.data["attack"]["icmp_type"] == 3


def test_icmpv6_flood() -> None:
    det = AttackDetector()
    flood = [IPv6(src="fd00::66", dst="fd00::5") / ICMPv6EchoRequest(seq=i) for i in range(800)]
    found = run(det, flood, step=0.0005)
    assert names(found) == ["DoS.Generic.ICMPFlood"]
    assert found[0].event.data["proto"] == "IPv6-ICMP"


# -- single-packet attacks -------------------------------------------------------------------


def test_land_is_reported_but_the_spoofed_address_is_not_blocked() -> None:
    det = AttackDetector()
    found = run(det, [IP(src=VICTIM, dst=VICTIM) / TCP(sport=139, dport=139, flags="S")])
    assert names(found) == ["DoS.Generic.Land"]
    assert found[0].action == "terminate" and found[0].block_minutes == 0
    assert found[0].event.data["attack"]["same_port"] is True


def test_ping_of_death_through_the_defragmenter() -> None:
    det = AttackDetector()
    big = IP(src=ATTACKER, dst=VICTIM, id=77) / ICMP(type=8) / Raw(b"P" * 65600)
    frags = fragment(big, fragsize=1480)
    found = run(det, frags, defrag=Defragmenter())
    assert names(found) == ["DoS.Generic.PingOfDeath"]
    assert found[0].action == "block"


def test_ping_of_death_last_fragment_alone() -> None:
    det = AttackDetector()
    last = IP(src=ATTACKER, dst=VICTIM, id=78, proto=1, frag=65528 // 8, flags=0) / Raw(b"P" * 100)
    assert names(run(det, [last])) == ["DoS.Generic.PingOfDeath"]


def test_teardrop_overlapping_fragments() -> None:
    det = AttackDetector()
    first = IP(src=ATTACKER, dst=VICTIM, id=99, flags="MF", proto=17, frag=0) / Raw(b"A" * 48)
    overlap = IP(src=ATTACKER, dst=VICTIM, id=99, flags=0, proto=17, frag=3) / Raw(b"B" * 8)
    found = run(det, [first, overlap], defrag=Defragmenter())
    assert "DoS.Generic.Teardrop" in names(found)


def test_smurf_and_fraggle_to_broadcast_are_not_blocked() -> None:
    det = AttackDetector(AttackConfig(broadcast=("10.0.0.0/24",)))
    found = run(
        det,
        [
            IP(src=VICTIM, dst="10.0.0.255") / ICMP(type=8),
            IP(src=VICTIM, dst="255.255.255.255") / UDP(sport=7, dport=19),
        ],
    )
    assert names(found) == ["DoS.Generic.Smurf", "DoS.Generic.Fraggle"]
    assert {v.action for v in found} == {"terminate"}
    # A directed broadcast arrives as an Ethernet broadcast, whatever the subnet.
    det2 = AttackDetector()
    raw = frame(IP(src=VICTIM, dst="192.168.7.255") / ICMP(type=8), dst_mac="ff:ff:ff:ff:ff:ff")
    assert names(run(det2, [raw])) == ["DoS.Generic.Smurf"]


@pytest.mark.parametrize(
    ("flags", "reason"), [("SF", "SYN+FIN"), ("SR", "SYN+RST"), ("FR", "FIN+RST")]
)
def test_invalid_tcp_flag_combinations(flags: str, reason: str) -> None:
    det = AttackDetector()
    found = run(det, [IP(src=ATTACKER, dst=VICTIM) / TCP(dport=22, flags=flags)])
    assert names(found) == ["Scan.Generic.InvalidFlags.TCP"]
    assert found[0].event.data["attack"]["reason"] == reason


def test_martian_sources_but_not_dhcp() -> None:
    det = AttackDetector()
    found = run(
        det,
        [
            IP(src="127.0.0.1", dst=VICTIM) / TCP(dport=80, flags="S"),
            IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67),  # DHCP discover
        ],
    )
    assert names(found) == ["Spoofing.Generic.MartianSource"]
    assert found[0].action == "terminate"


def test_syn_with_data_but_not_tcp_fast_open() -> None:
    det = AttackDetector()
    found = run(
        det,
        [
            IP(src=ATTACKER, dst=VICTIM) / TCP(dport=80, flags="S") / Raw(b"GET / HTTP/1.0\r\n"),
            IP(src="10.0.0.7", dst=VICTIM)
            / TCP(dport=443, flags="S", options=[("TFO", b"\x01" * 8)])
            / Raw(b"\x16\x03\x01"),
        ],
    )
    assert names(found) == ["Anomaly.Generic.SYNWithData"]
    assert found[0].source == ATTACKER


def test_arp_cache_poisoning() -> None:
    det = AttackDetector()
    gw = "10.0.0.1"
    legit = Ether(src="02:00:00:00:00:01", dst=MAC_B) / ARP(
        op=2, hwsrc="02:00:00:00:00:01", psrc=gw, hwdst=MAC_B, pdst=VICTIM
    )
    again = legit.copy()
    poison = Ether(src="02:66:66:66:66:66", dst=MAC_B) / ARP(
        op=2, hwsrc="02:66:66:66:66:66", psrc=gw, hwdst=MAC_B, pdst=VICTIM
    )
    found = run(det, [bytes(legit), bytes(again), bytes(poison), bytes(poison)], step=1.0)
    assert names(found) == ["Spoofing.Generic.ARP"]
    attack = found[0].event.data["attack"]
    assert attack["mac"] == "02:66:66:66:66:66" and attack["previous_mac"] == "02:00:00:00:00:01"
    assert found[0].action == "terminate"  # the address is the victim's: never blocked


# -- blocking policy, episodes, memory -------------------------------------------------------


def test_excluded_source_is_never_blocked() -> None:
    det = AttackDetector(AttackConfig(never_block=("10.0.0.0/25",)))
    found = run(det, [IP(src=ATTACKER, dst=VICTIM) / TCP(dport=p, flags="S") for p in range(50)])
    assert names(found) == ["Scan.Generic.PortScan.TCP"]
    v = found[0]
    assert v.action == "terminate" and v.block_minutes == 0
    assert v.event.data["attack"]["not_blocked"] == "source may not be blocked"
    assert not det.may_block(ATTACKER) and det.may_block("10.0.0.200")
    assert not det.may_block("127.0.0.1") and not det.may_block("not-an-address")
    assert not det.may_block("::ffff:127.0.0.1") and not det.may_block("::ffff:10.0.0.66")
    assert not det.may_block("ff02::1") and det.may_block("fd00::66")


def test_new_episode_after_quiet_period() -> None:
    det = AttackDetector()
    scan = [IP(src=ATTACKER, dst=VICTIM) / TCP(dport=p, flags="S") for p in range(1, 41)]
    first = run(det, scan, start=1000.0)
    again = run(det, scan, start=1030.0)  # within the 60 s episode: suppressed
    later = run(det, scan, start=1200.0)  # quiet for longer than 60 s: a new episode
    assert (len(names(first)), len(names(again)), len(names(later))) == (1, 0, 1)
    assert again and all(v.action == "block" for v in again)  # still attack packets
    assert det.stats["episodes"] == 2


def test_random_source_flood_keeps_memory_bounded() -> None:
    cfg = AttackConfig(max_sources=256, max_flows=512)
    det = AttackDetector(cfg)
    rng = random.Random(3)
    ts = 5000.0
    templates = [
        IP(src="10.0.0.1", dst=VICTIM) / TCP(dport=80, flags="S"),
        IP(src="10.0.0.1", dst=VICTIM) / UDP(dport=53),
        IP(src="10.0.0.1", dst=VICTIM) / ICMP(type=8),
    ]
    frames = [
        f
        for t in templates
        for f in variants(
            t,
            4000,
            lambda i: {
                26: bytes([10, *rng.randbytes(2), rng.randrange(1, 255)]),
                34: rng.randbytes(2),
            },
        )
    ]
    rng.shuffle(frames)
    for f in frames:
        det.process(decode(f, ts))
        ts += 0.0001
    # Fourteen tables, each capped: max_sources for twelve, max_flows for two.
    assert det.memory_entries() <= 12 * 256 + 2 * 512
    assert det._tcp_ports.evicted > 0


def test_config_from_dict_and_errors() -> None:
    cfg = AttackConfig.from_dict(
        {"tcp_port_scan": {"threshold": 5, "window": 2}, "never_block": ["192.0.2.0/24"]}
    )
    assert cfg.tcp_port_scan.threshold == 5 and cfg.never_block == ("192.0.2.0/24",)
    with pytest.raises(ValueError, match="unknown setting 'port_scan'"):
        AttackConfig.from_dict({"port_scan": {}})
    with pytest.raises(ValueError, match=r"attacks.syn_flood.action: 'ban'"):
        AttackConfig.from_dict({"syn_flood": {"action": "ban"}})
    with pytest.raises(ValueError, match=r"attacks.udp_flood.threshold"):
        AttackConfig.from_dict({"udp_flood": {"threshold": 0}})
    with pytest.raises(ValueError, match=r"never_block: 'nonsense'"):
        AttackConfig.from_dict({"never_block": ["nonsense"]})


def test_disabled_detector_stays_silent() -> None:
    det = AttackDetector(AttackConfig.from_dict({"tcp_port_scan": {"enabled": False}}))
    assert (
        run(det, [IP(src=ATTACKER, dst=VICTIM) / TCP(dport=p, flags="S") for p in range(99)]) == []
    )


# -- normal traffic --------------------------------------------------------------------------


def _tcp_session(
    client: str, server: str, sport: int, dport: int, replies: int
) -> list[ScapyPacket]:
    c, s = IP(src=client, dst=server), IP(src=server, dst=client)
    pkts = [
        c / TCP(sport=sport, dport=dport, flags="S", seq=100),
        s / TCP(sport=dport, dport=sport, flags="SA", seq=500, ack=101),
        c / TCP(sport=sport, dport=dport, flags="A", seq=101, ack=501),
        c
        / TCP(sport=sport, dport=dport, flags="PA", seq=101, ack=501)
        / Raw(b"GET / HTTP/1.1\r\n\r\n"),
    ]
    for i in range(replies):
        pkts.append(
            s
            / TCP(sport=dport, dport=sport, flags="A", seq=501 + i * 1000, ack=120)
            / Raw(b"d" * 1000)
        )
        pkts.append(c / TCP(sport=sport, dport=dport, flags="A", seq=120, ack=1501 + i * 1000))
    pkts += [
        c / TCP(sport=sport, dport=dport, flags="FA", seq=120, ack=501 + replies * 1000),
        s / TCP(sport=dport, dport=sport, flags="FA", seq=501 + replies * 1000, ack=121),
        c / TCP(sport=sport, dport=dport, flags="A", seq=121, ack=502 + replies * 1000),
    ]
    return pkts


def test_normal_traffic_raises_nothing() -> None:
    det = AttackDetector()
    client = "10.0.0.20"
    rng = random.Random(11)
    traffic: list[ScapyPacket | bytes] = []
    # A browsing burst: 60 connections to 25 servers on 80/443 within a second, interleaved.
    sessions = [
        _tcp_session(
            client, f"198.51.100.{rng.randrange(1, 26)}", 40000 + i, rng.choice([80, 443]), 5
        )
        for i in range(60)
    ]
    while any(sessions):
        s = rng.choice([s for s in sessions if s])
        traffic.append(s.pop(0))
    # A busy DNS client: 400 queries from random ports, each answered.
    q = frame(IP(src=client, dst="10.0.0.53") / UDP(sport=1, dport=53) / Raw(b"q" * 30))
    a = frame(IP(src="10.0.0.53", dst=client) / UDP(sport=53, dport=1) / Raw(b"a" * 90))
    for _ in range(400):
        port = rng.randrange(1024, 65535).to_bytes(2, "big")
        traffic.append(q[:34] + port + q[36:])
        traffic.append(a[:36] + port + a[38:])
    # Monitoring: ping 8 hosts, and their replies.
    for i in range(8):
        traffic.append(IP(src=client, dst=f"10.0.0.{100 + i}") / ICMP(type=8, seq=i))
        traffic.append(IP(src=f"10.0.0.{100 + i}", dst=client) / ICMP(type=0, seq=i))
    # Port-unreachable answers and resets (answers to something, never probes).
    traffic.append(IP(src=VICTIM, dst=client) / ICMP(type=3, code=3))
    traffic.append(IP(src=VICTIM, dst=client) / TCP(sport=81, dport=40000, flags="RA"))
    assert run(det, traffic, step=0.0008) == []
    assert det.stats["packets"] == len(traffic)


def test_ipv6_neighbour_discovery_from_unspecified_is_normal() -> None:
    from scapy.layers.inet6 import ICMPv6ND_NS

    det = AttackDetector()
    dad = IPv6(src="::", dst="ff02::1:ff00:5") / ICMPv6ND_NS(tgt="fd00::5")
    assert run(det, [dad]) == []


def test_packet_without_ip_is_ignored() -> None:
    det = AttackDetector()
    assert det.process(Packet(ts=1.0, raw=b"")) == []
    # A truncated header: the version is known, the addresses are not.
    assert det.process(Packet(ts=1.0, raw=b"", ip_version=4, proto=17)) == []
    assert det.process(Packet(ts=1.0, raw=b"", eth_type=0x0806, payload=b"\x00" * 5)) == []


def test_vlans_are_separate_segments() -> None:
    from scapy.layers.l2 import Dot1Q

    det = AttackDetector()

    def tagged(vlan: int, port: int) -> bytes:
        return bytes(
            Ether(src=MAC_A, dst=MAC_B)
            / Dot1Q(vlan=vlan)
            / IP(src=ATTACKER, dst=VICTIM)
            / TCP(dport=port, flags="S")
        )

    # 15 ports on each of two VLANs: the same addresses, but two different hosts each time.
    split = [tagged(10 if i % 2 else 20, 1000 + i) for i in range(30)]
    assert run(det, split) == []
    found = run(det, [tagged(10, 2000 + i) for i in range(20)])
    assert names(found) == ["Scan.Generic.PortScan.TCP"]
    assert found[0].vlan == 10 and found[0].event.data["vlan"] == [10]


def test_many_accepted_ports_are_not_a_scan() -> None:
    # FTP passive transfers / RTP: one client, one server, many ports, every one answering.
    det = AttackDetector()
    pkts: list[ScapyPacket] = []
    for i in range(40):
        port = 50000 + i
        pkts += [
            IP(src="10.0.0.20", dst=VICTIM) / TCP(sport=40000 + i, dport=port, flags="S"),
            IP(src=VICTIM, dst="10.0.0.20") / TCP(sport=port, dport=40000 + i, flags="SA"),
            IP(src="10.0.0.20", dst=VICTIM) / UDP(sport=30000 + i, dport=port),
            IP(src=VICTIM, dst="10.0.0.20") / UDP(sport=port, dport=30000 + i),
        ]
    assert run(det, pkts, step=0.01) == []
    # The same ports unanswered are a scan.
    probes = [IP(src="10.0.0.21", dst=VICTIM) / TCP(dport=50000 + i, flags="S") for i in range(40)]
    assert names(run(det, probes)) == ["Scan.Generic.PortScan.TCP"]


def test_ipv6_port_scan_and_land() -> None:
    det = AttackDetector()
    probes = [IPv6(src="fd00::66", dst="fd00::5") / TCP(dport=p, flags="S") for p in range(1, 30)]
    land = IPv6(src="fd00::5", dst="fd00::5") / TCP(sport=80, dport=80, flags="S")
    found = run(det, [*probes, land])
    assert names(found) == ["Scan.Generic.PortScan.TCP", "DoS.Generic.Land"]
    assert found[0].source == "fd00::66" and found[0].action == "block"


def test_ipv6_neighbour_cache_poisoning() -> None:
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr

    det = AttackDetector()

    def advert(mac: str) -> bytes:
        return bytes(
            Ether(src=mac, dst="33:33:00:00:00:01")
            / IPv6(src="fe80::1", dst="ff02::1")
            / ICMPv6ND_NA(tgt="fd00::1", R=1, S=0, O=1)
            / ICMPv6NDOptDstLLAddr(lladdr=mac)
        )

    legit, evil = "02:00:00:00:00:01", "02:66:66:66:66:66"
    found = run(det, [advert(legit), advert(legit), advert(evil)], step=1.0)
    assert names(found) == ["Spoofing.Generic.NDP"]
    attack = found[0].event.data["attack"]
    assert (attack["ip"], attack["mac"], attack["previous_mac"]) == ("fd00::1", evil, legit)
    assert found[0].action == "terminate"


def test_episode_summary_when_enabled() -> None:
    det = AttackDetector(AttackConfig(episode_summary=True))
    scan = [IP(src=ATTACKER, dst=VICTIM) / TCP(dport=p, flags="S") for p in range(1, 101)]
    found = run(det, scan, start=1000.0, step=0.01)
    assert names(found) == ["Scan.Generic.PortScan.TCP"]
    # The next packet after the quiet period carries the summary, with the episode's totals.
    later = run(det, [IP(src="10.0.0.20", dst=VICTIM) / TCP(dport=80, flags="S")], start=1100.0)
    assert len(later) == 1 and later[0].action == "ignore"
    summary = later[0].event.data["attack"]
    assert summary["state"] == "ended" and summary["count"] == 100 - 20 + 1
    assert summary["duration"] == pytest.approx(0.8) and summary["action"] == "block"
    assert later[0].event.data["src_ip"] == ATTACKER
    # flush() ends the episodes still open (end of a capture).
    run(det, scan, start=2000.0)
    (flushed,) = det.flush()
    assert flushed.event.data["attack"]["state"] == "ended" and det.active_episodes() == []


def test_no_summary_by_default() -> None:
    det = AttackDetector()
    scan = [IP(src=ATTACKER, dst=VICTIM) / TCP(dport=p, flags="S") for p in range(1, 101)]
    run(det, scan, start=1000.0)
    assert (
        run(det, [IP(src="10.0.0.20", dst=VICTIM) / TCP(dport=80, flags="S")], start=1100.0) == []
    )
    assert det.flush() == []


def test_detector_tables_are_lru_bounded_and_expire_oldest_first() -> None:
    # The detector's tables (a dict kept in recency order) must behave as an LRU with a cap:
    # a touched key becomes the most recent, a full table drops the least recent first (a
    # batch of cap // 64 at once), a flood never grows it, and expiry removes from the least
    # recent up to the first entry still fresh.
    from vmshield.engines.net.attacks import _Bounded, _Rate

    t = _Bounded(128)
    for i in range(128):
        t.touch(i, float)
    t.touch(0, float)  # 0 is now the most recent
    t.touch(1000, float)  # full: the two least recent (1 and 2) go
    assert 0 in t and 1 not in t and 2 not in t and 3 in t and 1000 in t
    assert t.evicted == 2 and len(t) == 127
    t.move_to_end(3)
    assert list(t.d)[-1] == 3
    for i in range(20_000):
        t.touch(("flood", i), float)
        t.touch(0, float)
        assert len(t) <= 128
    assert 0 in t and 3 not in t

    r = _Bounded(64)
    for i in range(10):
        r.touch(i, _Rate).add(float(i), 60.0)
    r.touch(2, _Rate).add(20.0, 60.0)  # refreshed: now after 9
    gone = r.pop_oldest_while(lambda v: 30.0 - v.last > 25.0)
    assert [k for k, _ in gone] == [0, 1, 3, 4]
    assert list(r.d) == [5, 6, 7, 8, 9, 2]
