"""The engine end to end on generated traffic: streams, app layer, rules, verdicts, events."""

from __future__ import annotations

import struct

import pytest
from nids_capgen import CLIENT, SERVER, TcpConv, client_hello, server_hello, udp_frame
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import ICMP, IP, TCP, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from vmshield.engines.net.attacks import AttackConfig, AttackDetector
from vmshield.engines.net.config import EngineConfig
from vmshield.engines.net.engine import Action, Engine
from vmshield.engines.net.rules import Classification, RuleSet, Variables
from vmshield.events import Event, eve_line

REQUEST = (
    b"GET /download/EVILSPLIT.exe HTTP/1.1\r\nHost: files.example.org\r\n"
    b"User-Agent: Mozilla/5.0 (vmshield-test)\r\nAccept: */*\r\n\r\n"
)
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\nMZ\x90\x00"

RULES = """
alert http any any -> any any (msg:"evil uri"; flow:established,to_server; http.uri; content:"/download/EVIL"; sid:1001; rev:2; classtype:trojan-activity;)
alert tcp any any -> any any (msg:"split content in stream"; flow:to_server; content:"EVILSPLIT"; sid:1002; rev:1;)
drop tcp any any -> any 6666 (msg:"drop port 6666"; flags:S; sid:1003;)
reject tcp any any -> any any (msg:"reject marker"; content:"REJECTME"; sid:1004;)
alert dns any any -> any any (msg:"dns bad name"; dns.query; content:"bad.example"; sid:1005;)
alert tls any any -> any any (msg:"tls sni"; tls.sni; content:"tls.example"; sid:1006;)
"""


def _rules() -> RuleSet:
    rs = RuleSet.load(
        texts=[RULES], variables=Variables.default(), classification=Classification.default()
    )
    assert rs.stats.loaded == 6, rs.rejected
    return rs


def _run(engine: Engine, frames: list[tuple[float, bytes]]) -> tuple[list[Event], list[Action]]:
    events: list[Event] = []
    verdicts = []
    for ts, f in frames:
        r = engine.process(f, ts)
        events.extend(r.events)
        verdicts.append(r.verdict.action)
    events.extend(engine.flush())
    return events, verdicts


def _http_conv(order: str) -> list[tuple[float, bytes]]:
    c = TcpConv().handshake()
    segs = c.segments(REQUEST, 13)
    if order == "reverse":
        segs = segs[::-1]
    elif order == "retransmit":
        segs = segs[:3] + segs[1:3] + segs[3:] + [segs[-1]]
    elif order == "shuffle":
        segs = segs[1::2] + segs[0::2]
    for s in segs:
        c.emit(Ether(s))
    c.send(RESPONSE, toserver=False)
    c.fin()
    return c.frames


@pytest.mark.parametrize("order", ["in-order", "reverse", "retransmit", "shuffle"])
def test_http_split_out_of_order_retransmitted(order: str) -> None:
    e = Engine(EngineConfig(mode="ids"), rules=_rules())
    events, _ = _run(e, _http_conv(order))
    http = [ev for ev in events if ev.event_type == "http"]
    assert len(http) == 1
    h = http[0].data["http"]
    assert h["hostname"] == "files.example.org" and h["url"] == "/download/EVILSPLIT.exe"
    assert h["http_user_agent"] == "Mozilla/5.0 (vmshield-test)"
    assert h["status"] == 200 and h["length"] == 4
    assert h["http_content_type"] == "application/octet-stream"
    assert http[0].data["src_ip"] == CLIENT and http[0].data["dest_port"] == 80
    sids = sorted(ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert")
    # Each signature once: the split content is found, and retransmissions do not repeat it.
    assert sids == [1001, 1002]
    alert = next(
        ev for ev in events if ev.event_type == "alert" and ev.data["alert"]["signature_id"] == 1001
    )
    assert alert.data["alert"]["category"] == "A Network Trojan was detected"
    assert alert.data["alert"]["action"] == "allowed"
    assert (
        alert.data["app_proto"] == "http" and alert.data["http"]["hostname"] == "files.example.org"
    )
    assert alert.data["flow_id"] == http[0].data["flow_id"]
    assert alert.data["community_id"].startswith("1:")
    if order == "retransmit":
        assert e.stats()["retransmissions"] >= 3


def test_eve_lines_are_json_with_suricata_fields() -> None:
    import json

    e = Engine(rules=_rules())
    events, _ = _run(e, _http_conv("in-order"))
    objs = [json.loads(eve_line(ev)) for ev in events]
    alert = next(
        o for o in objs if o["event_type"] == "alert" and o["alert"]["signature_id"] == 1001
    )
    for k in (
        "timestamp",
        "flow_id",
        "src_ip",
        "src_port",
        "dest_ip",
        "dest_port",
        "proto",
        "app_proto",
    ):
        assert k in alert
    assert alert["proto"] == "TCP"
    assert set(alert["alert"]) >= {
        "action",
        "gid",
        "signature_id",
        "rev",
        "signature",
        "category",
        "severity",
    }
    assert alert["alert"]["rev"] == 2 and alert["alert"]["gid"] == 1


def test_drop_rule_in_ips_mode_drops_the_flow() -> None:
    e = Engine(EngineConfig(mode="ips"), rules=_rules())
    c = TcpConv(sport=6666).handshake()
    c.send(b"hello")
    _events, verdicts = _run(e, c.frames)
    assert verdicts[0] == Action.DROP
    assert all(v == Action.DROP for v in verdicts[1:])  # the rest of the flow too
    assert e.stats()["drops"] == 1


def test_ids_mode_never_blocks() -> None:
    e = Engine(EngineConfig(mode="ids"), rules=_rules())
    c = TcpConv(sport=6666).handshake()
    events, verdicts = _run(e, c.frames)
    assert set(verdicts) == {Action.ACCEPT}
    assert any(ev.event_type == "alert" for ev in events)


def test_reject_gives_reset() -> None:
    e = Engine(rules=_rules())
    c = TcpConv().handshake()
    c.send(b"xxREJECTMExx")
    _, verdicts = _run(e, c.frames)
    assert verdicts[-1] == Action.RESET


def _first_alert(events: list[Event]) -> dict[str, object]:
    alerts = [ev.data["alert"] for ev in events if ev.event_type == "alert"]
    assert alerts
    return alerts[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("minutes", [0, 30])
def test_drop_rule_blocks_its_source_with_ids_block_minutes(minutes: int) -> None:
    """The policy's "terminate and block": the rule's packet blocks its source as an attack
    does (BLOCK_SOURCE); 0 (the default) keeps the rule's own drop."""
    e = Engine(EngineConfig(mode="ips", ids_block_minutes=minutes), rules=_rules())
    c = TcpConv(sport=6666).handshake()
    c.send(b"hello")
    (ts, syn), rest = c.frames[0], c.frames[1:]
    r = e.process(syn, ts)
    v, alert = r.verdict, _first_alert(list(r.events))
    assert alert["signature_id"] == 1003 and alert["action"] == "blocked"
    if minutes:
        assert (v.action, v.block_address, v.block_minutes) == (Action.BLOCK_SOURCE, CLIENT, 30)
        assert v.reason == "sid 1003" and alert["block_minutes"] == 30
        assert (e.stats()["blocks"], e.stats()["drops"]) == (1, 0)
    else:
        assert (v.action, v.block_address, v.block_minutes) == (Action.DROP, "", 0)
        assert "block_minutes" not in alert and "not_blocked" not in alert
        assert (e.stats()["blocks"], e.stats()["drops"]) == (0, 1)
    _, verdicts = _run(e, rest)
    assert set(verdicts) == {Action.DROP}  # the rest of the flow, as before (blocked once)


def test_reject_rule_blocks_its_source_with_ids_block_minutes() -> None:
    e = Engine(EngineConfig(ids_block_minutes=5), rules=_rules())
    c = TcpConv().handshake()
    c.send(b"xxREJECTMExx")
    _, verdicts = _run(e, c.frames)
    assert verdicts[-1] == Action.BLOCK_SOURCE  # the block, not a reset to the blocked source


def test_alert_and_pass_rules_never_block() -> None:
    e = Engine(EngineConfig(ids_block_minutes=30), rules=_rules())
    c = TcpConv().handshake()
    c.send(b"xxEVILSPLITxx")
    events, verdicts = _run(e, c.frames)
    alert = _first_alert(events)
    assert alert["signature_id"] == 1002 and alert["action"] == "allowed"
    assert "block_minutes" not in alert and "not_blocked" not in alert
    assert set(verdicts) <= {Action.ACCEPT, Action.BYPASS} and e.stats()["blocks"] == 0
    rs = RuleSet.load(
        texts=[
            'pass tcp any any -> any 8443 (msg:"trusted backup"; content:"BACKUP"; sid:80;)\n'
            'drop tcp any any -> any any (msg:"marker"; content:"MARK"; sid:82;)'
        ],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    e = Engine(EngineConfig(ids_block_minutes=30), rules=rs)
    c = TcpConv(sport=8443).handshake()
    c.send(b"BACKUP MARK")
    events, verdicts = _run(e, c.frames)
    assert not [ev for ev in events if ev.event_type == "alert"]
    assert set(verdicts) <= {Action.ACCEPT, Action.BYPASS} and e.stats()["blocks"] == 0
    c = TcpConv(sport=9443).handshake()  # no pass rule there: the drop rule blocks
    c.send(b"BACKUP MARK")
    _, verdicts = _run(e, c.frames)
    assert Action.BLOCK_SOURCE in verdicts and e.stats()["blocks"] == 1


def test_ids_block_minutes_never_blocks_in_ids_mode() -> None:
    e = Engine(EngineConfig(mode="ids", ids_block_minutes=30), rules=_rules())
    c = TcpConv(sport=6666).handshake()
    events, verdicts = _run(e, c.frames)
    assert set(verdicts) == {Action.ACCEPT}
    alert = _first_alert(events)
    assert alert["action"] == "allowed" and "block_minutes" not in alert


def test_ids_block_honours_do_not_block() -> None:
    """The attack detector's "do not block" list (the filter's no_block exclusions) and the
    addresses never blocked hold for IDS blocks too: the rule then acts as written."""
    det = AttackDetector(AttackConfig(never_block=(f"{CLIENT}/32",)))
    e = Engine(EngineConfig(ids_block_minutes=30), rules=_rules(), attacks=det)
    c = TcpConv(sport=6666).handshake()
    r = e.process(c.frames[0][1], c.frames[0][0])
    assert (r.verdict.action, r.verdict.block_address) == (Action.DROP, "")
    alert = _first_alert(list(r.events))
    assert alert["not_blocked"] == "source may not be blocked" and "block_minutes" not in alert
    assert e.stats()["blocks"] == 0
    # Without a detector, an address that is never blocked (loopback) is still refused.
    e = Engine(EngineConfig(ids_block_minutes=30), rules=_rules())
    c = TcpConv(client="127.0.0.1", sport=6666).handshake()
    r = e.process(c.frames[0][1], c.frames[0][0])
    assert r.verdict.action == Action.DROP and _first_alert(list(r.events))["not_blocked"]
    # Another source is blocked by the same engine.
    c = TcpConv(client="10.1.0.99", sport=6666).handshake()
    r = e.process(c.frames[0][1], c.frames[0][0] + 1)
    assert (r.verdict.action, r.verdict.block_address) == (Action.BLOCK_SOURCE, "10.1.0.99")


def test_dns_udp_query_and_answer() -> None:
    e = Engine(rules=_rules())
    q = DNS(id=9, rd=1, qd=DNSQR(qname="bad.example"))
    a = DNS(
        id=9,
        qr=1,
        rd=1,
        ra=1,
        rcode=0,
        qd=DNSQR(qname="bad.example"),
        an=[DNSRR(rrname="bad.example", type="A", rdata="10.9.9.9", ttl=30)],
    )
    frames = [
        (1.0, udp_frame(CLIENT, SERVER, 33333, 53, bytes(q))),
        (1.1, udp_frame(SERVER, CLIENT, 53, 33333, bytes(a))),
    ]
    events, _ = _run(e, frames)
    dns = [ev.data for ev in events if ev.event_type == "dns"]
    assert [d["dns"]["type"] for d in dns] == ["query", "answer"]
    assert dns[1]["dns"]["answers"][0]["rdata"] == "10.9.9.9"
    assert dns[1]["src_ip"] == SERVER  # answers are reported in their own direction
    assert [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"] == [1005]


def test_dns_over_tcp_on_an_unusual_port_is_detected_by_content() -> None:
    e = Engine()
    q = bytes(DNS(id=1, rd=1, qd=DNSQR(qname="tcp.example")))
    c = TcpConv(sport=5353).handshake()
    c.send(struct.pack("!H", len(q)) + q)
    events, _ = _run(e, c.frames)
    dns = [ev.data for ev in events if ev.event_type == "dns"]
    assert dns and dns[0]["dns"]["rrname"] == "tcp.example" and dns[0]["app_proto"] == "dns"


def test_http_on_a_non_http_port() -> None:
    e = Engine()
    c = TcpConv(sport=53).handshake()
    c.send(b"GET /x HTTP/1.1\r\nHost: odd.example\r\n\r\n")
    c.send(b"HTTP/1.1 204 No Content\r\n\r\n", toserver=False)
    events, _ = _run(e, c.frames)
    assert [ev.data["http"]["hostname"] for ev in events if ev.event_type == "http"] == [
        "odd.example"
    ]


def test_tls_sni_ja3_and_bypass_once_encrypted() -> None:
    e = Engine(rules=_rules())
    c = TcpConv(sport=443).handshake()
    c.send(
        client_hello("tls.example", version=769, ciphers=[47, 53], groups=[23], point_formats=[0])
    )
    c.send(server_hello(47, [(0xFF01, b"\x00")]), toserver=False)
    c.send(b"\x14\x03\x03\x00\x01\x01")
    c.send(b"\x14\x03\x03\x00\x01\x01", toserver=False)
    c.send(b"\x17\x03\x03\x00\x05" + b"q" * 5)
    events, verdicts = _run(e, c.frames)
    tls = [ev.data["tls"] for ev in events if ev.event_type == "tls"]
    assert tls and tls[0]["sni"] == "tls.example" and len(tls[0]["ja3"]["hash"]) == 32
    assert tls[0]["ja3s"]["string"] == "771,47,65281"
    assert 1006 in [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"]
    assert Action.BYPASS in verdicts  # encrypted: no more inspection needed


def test_stream_depth_reached_gives_bypass() -> None:
    e = Engine(EngineConfig(stream_depth=100))
    c = TcpConv(sport=9000).handshake()
    c.send(b"x" * 150)
    c.send(b"y" * 150, toserver=False)
    c.send(b"z" * 10)
    _, verdicts = _run(e, c.frames)
    assert verdicts[-1] == Action.BYPASS
    assert e.stats()["bypassed_flows"] == 1


def test_fragmented_datagram_is_reassembled_and_inspected() -> None:
    e = Engine(
        rules=RuleSet.load(
            texts=[
                'alert udp any any -> any any (msg:"frag payload"; content:"NEEDLE-IN-FRAGMENTS"; sid:7;)'
            ],
            variables=Variables.default(),
            classification=Classification.default(),
        )
    )
    pkt = IP(src=CLIENT, dst=SERVER, id=321) / fragment_udp(
        b"a" * 100 + b"NEEDLE-IN-FRAGMENTS" + b"b" * 100
    )
    frames = [(1.0 + i / 100, bytes(Ether() / f)) for i, f in enumerate(fragment(pkt, fragsize=48))]
    events, _ = _run(e, frames)
    assert [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"] == [7]
    assert e.stats()["defrag"]["reassembled"] == 1


def fragment_udp(payload: bytes):  # type: ignore[no-untyped-def]
    from scapy.layers.inet import UDP

    return UDP(sport=4000, dport=4001) / Raw(payload)


def test_overlapping_fragments_produce_anomaly_events() -> None:
    e = Engine()
    a = IP(src=CLIENT, dst=SERVER, id=7, flags="MF", frag=0, proto=17) / Raw(b"A" * 48)
    b = IP(src=CLIENT, dst=SERVER, id=7, frag=3, proto=17) / Raw(b"B" * 40)
    events, _ = _run(e, [(1.0, bytes(Ether() / a)), (1.1, bytes(Ether() / b))])
    an = [ev.data["anomaly"]["event"] for ev in events if ev.event_type == "anomaly"]
    assert "decoder.ipv4.frag_overlap" in an


def test_malformed_packets_give_anomaly_events_and_never_raise() -> None:
    e = Engine()
    good = bytes(Ether() / IP(src=CLIENT, dst=SERVER) / TCP() / Raw(b"x" * 40))
    frames = [(1.0, good[:30]), (1.1, b"\x00" * 5), (1.2, good[:14] + b"\x46" + good[15:20])]
    events, verdicts = _run(e, frames)
    names = [ev.data["anomaly"]["event"] for ev in events if ev.event_type == "anomaly"]
    assert "decoder.ipv4.trunc_pkt" in names or "decoder.ipv4.pkt_too_small" in names
    assert "decoder.ethernet.pkt_too_small" in names
    assert set(verdicts) == {Action.ACCEPT}
    assert e.stats()["decoder_anomalies"] >= 3


def test_flow_events_and_expiry() -> None:
    e = Engine(EngineConfig(out_flow=True))
    r1 = e.process(bytes(Ether() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8)), 100.0)
    e.process(bytes(Ether() / IP(src=SERVER, dst=CLIENT) / ICMP(type=0)), 100.1)
    assert r1.verdict.action == Action.ACCEPT
    assert e.flush(200.0) == []  # established ICMP flow: 300 s timeout
    ended = e.flush(500.0)
    assert len(ended) == 1 and ended[0].event_type == "flow"
    fl = ended[0].data["flow"]
    assert fl["pkts_toserver"] == 1 and fl["pkts_toclient"] == 1 and fl["state"] == "established"
    assert ended[0].data["proto"] == "ICMP"


def test_flow_cap_in_the_engine_keeps_memory_bounded() -> None:
    e = Engine(EngineConfig(flow_max=200, out_flow=True))
    n = 0
    for i in range(1000):
        r = e.process(udp_frame(CLIENT, SERVER, 1024 + i, 9999, b"x"), 10.0)
        n += sum(1 for ev in r.events if ev.event_type == "flow")
        assert len(e.flows) <= 200 and not e.flows.pending_ended  # evicted flows released at once
    n += sum(1 for ev in e.flush() if ev.event_type == "flow")
    assert e.stats()["flows_active"] == 0
    assert n == 1000  # every flow logged once, including evicted ones
    assert e.stats()["flow_emergency_entered"] >= 1


def test_vlan_and_raw_ip_linktype() -> None:
    e = Engine()
    raw = bytes(IP(src=CLIENT, dst=SERVER) / TCP(sport=1, dport=80, flags="S"))
    r = e.process(raw, 1.0, linktype=101, iface="nfq0")
    assert r.verdict.action == Action.ACCEPT
    assert e.stats()["flows_created"] == 1


def test_truncated_icmp_header_does_not_break_community_id() -> None:
    # Found by fuzzing: an ICMP packet too short for type/code, logged with its community id.
    e = Engine()
    frame = bytes(Ether() / IP(src=CLIENT, dst=SERVER, proto=1) / Raw(b"\x08"))
    r = e.process(frame, 1.0)
    an = [ev.data for ev in r.events if ev.event_type == "anomaly"]
    assert an and an[0]["anomaly"]["event"] == "decoder.icmpv4.pkt_too_small"
    assert an[0]["community_id"].startswith("1:")


def _url_db(tmp_path, expression: str, category: str):  # type: ignore[no-untyped-def]
    from vmshield.engines.net.urls import UrlDatabase
    from vmshield.engines.net.urls.db import DatabaseBuilder, category_bits

    b = DatabaseBuilder()
    b.add_expression(expression, category_bits(category))
    b.write(tmp_path / "u.db")
    return UrlDatabase(tmp_path / "u.db")


def test_malicious_http_url_gets_a_block_page(tmp_path) -> None:  # type: ignore[no-untyped-def]
    e = Engine(EngineConfig(mode="ips"), url_db=_url_db(tmp_path, "bad.example/", "malicious"))
    c = TcpConv().handshake()
    c.send(b"GET /x/y HTTP/1.1\r\nHost: bad.example\r\n\r\n")
    c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz", toserver=False)
    results = [e.process(f, ts) for ts, f in c.frames]
    req = results[3]
    assert req.verdict.action == Action.RESET and req.verdict.block_page is not None
    page = req.verdict.block_page.http_response()
    assert page.startswith(b"HTTP/1.1 403") and b"malicious" in page
    url = [ev.data for ev in req.events if ev.event_type == "url"]
    assert url and url[0]["url"]["action"] == "blocked" and url[0]["url"]["source"] == "http"
    assert results[4].verdict.action == Action.DROP  # the rest of the flow does not pass


def test_malicious_sni_resets_and_dns_name_is_reported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = _url_db(tmp_path, "evil.example/", "phishing")
    e = Engine(EngineConfig(mode="ips"), url_db=db)
    c = TcpConv(sport=443).handshake()
    c.send(client_hello("login.evil.example", ciphers=[0x1301]))
    r = [e.process(f, ts) for ts, f in c.frames][-1]
    assert r.verdict.action == Action.RESET
    assert [ev.data["url"]["source"] for ev in r.events if ev.event_type == "url"] == ["tls.sni"]
    q = bytes(DNS(id=3, rd=1, qd=DNSQR(qname="www.evil.example")))
    r2 = e.process(udp_frame(CLIENT, SERVER, 40001, 53, q), 2.0)
    assert [ev.data["url"]["source"] for ev in r2.events if ev.event_type == "url"] == ["dns"]
    assert r2.verdict.action == Action.ACCEPT  # url.dns-action defaults to alert


class _Finding:
    def __init__(self, event: Event | None, source: str) -> None:
        self.event, self.action, self.block_minutes, self.source = event, "block", 60, source


class _SynCounter:
    """A detector in the engine's attack interface: `process(packet) -> findings`."""

    def __init__(self) -> None:
        self.seen = 0

    def process(self, p):  # type: ignore[no-untyped-def]
        if p.proto == 6 and p.tcp_flags == 0x02:
            self.seen += 1
            if self.seen == 3:
                ev = Event(
                    event_type="attack",
                    data={"src_ip": p.src, "attack": {"name": "Scan.Generic.PortScan.TCP"}},
                )
                return [_Finding(ev, p.src)]
        return []


def test_attack_detector_findings_become_block_source_verdicts() -> None:
    det = _SynCounter()
    e = Engine(EngineConfig(mode="ips"), attacks=det)
    out = [e.process(bytes(Ether() / IP(src="172.16.5.5", dst=SERVER) / TCP(sport=999, dport=p, flags="S")), 1.0 + p)
           for p in (21, 22, 23)]  # fmt: skip
    assert [r.verdict.action for r in out] == [Action.ACCEPT, Action.ACCEPT, Action.BLOCK_SOURCE]
    v = out[2].verdict
    assert v.block_address == "172.16.5.5" and v.block_minutes == 60
    ev = [x for x in out[2].events if x.event_type == "attack"]
    assert ev and "flow_id" in ev[0].data
    ids = Engine(EngineConfig(mode="ids"), attacks=_SynCounter())
    r = [ids.process(bytes(Ether() / IP(src="172.16.5.5", dst=SERVER) / TCP(sport=9, dport=p, flags="S")), 1.0) for p in (1, 2, 3)]  # fmt: skip
    assert r[2].verdict.action == Action.ACCEPT and r[2].events  # reported, never blocked


def test_protocol_detection_across_tiny_first_segments() -> None:
    # "GE" alone says nothing; the rest arrives in a large segment: nothing may be lost.
    e = Engine()
    c = TcpConv(sport=8080).handshake()
    c.send(b"GE")
    c.send(b"T /tiny HTTP/1.1\r\nHost: tiny.example\r\nX-Pad: " + b"p" * 600 + b"\r\n\r\n")
    c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", toserver=False)
    events, _ = _run(e, c.frames)
    http = [ev.data["http"] for ev in events if ev.event_type == "http"]
    assert http == [
        {
            "hostname": "tiny.example",
            "url": "/tiny",
            "http_method": "GET",
            "protocol": "HTTP/1.1",
            "status": 200,
            "length": 0,
        }
    ]


def test_unknown_protocol_is_not_guessed_mid_stream() -> None:
    e = Engine()
    c = TcpConv(sport=7000).handshake()
    c.send(b"\x01\x02binary-protocol-hello" + b"\x00" * 40)
    c.send(b"\x07\x08binary-reply" + b"\x00" * 40, toserver=False)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # looks like HTTP, but the flow is not HTTP
    events, _ = _run(e, c.frames)
    assert not [ev for ev in events if ev.event_type == "http"]
    assert e.stats()["app_proto"] == {}


def test_ipv6_in_a_vlan_http_flow() -> None:
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q

    c6, s6 = "2001:db8::10", "2001:db8::20"

    def fr(
        src: str, dst: str, sp: int, dp: int, flags: str, seq: int, ack: int, data: bytes = b""
    ) -> bytes:
        return bytes(
            Ether()
            / Dot1Q(vlan=30)
            / IPv6(src=src, dst=dst)
            / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack)
            / Raw(data)
        )

    req = b"GET /v6 HTTP/1.1\r\nHost: six.example\r\n\r\n"
    frames = [
        (1.0, fr(c6, s6, 5000, 80, "S", 0, 0)),
        (1.1, fr(s6, c6, 80, 5000, "SA", 100, 1)),
        (1.2, fr(c6, s6, 5000, 80, "A", 1, 101)),
        (1.3, fr(c6, s6, 5000, 80, "PA", 1, 101, req)),
        (
            1.4,
            fr(
                s6,
                c6,
                80,
                5000,
                "PA",
                101,
                1 + len(req),
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            ),
        ),
    ]
    events, _ = _run(Engine(), frames)
    (h,) = [ev.data for ev in events if ev.event_type == "http"]
    assert h["src_ip"] == c6 and h["dest_ip"] == s6 and h["vlan"] == [30]
    assert h["http"]["hostname"] == "six.example"


def test_teardrop_and_ping_of_death_reach_the_attack_detector() -> None:
    from vmshield.engines.net.attacks import AttackDetector

    e = Engine(EngineConfig(mode="ips"), attacks=AttackDetector())
    a = IP(src="10.66.0.1", dst=SERVER, id=7, flags="MF", frag=0, proto=17) / Raw(b"A" * 48)
    b = IP(src="10.66.0.1", dst=SERVER, id=7, frag=3, proto=17) / Raw(b"B" * 40)
    pod_first = IP(src="10.66.0.2", dst=SERVER, id=9, flags="MF", proto=1) / ICMP() / Raw(b"y" * 64)
    pod_last = IP(src="10.66.0.2", dst=SERVER, id=9, frag=8189, proto=1) / Raw(b"x" * 100)
    results = [
        e.process(bytes(Ether() / pkt), 1.0 + i / 10)
        for i, pkt in enumerate((a, b, pod_first, pod_last))
    ]
    names = [
        ev.data["attack"]["name"] for r in results for ev in r.events if ev.event_type == "attack"
    ]
    assert "DoS.Generic.Teardrop" in names and "DoS.Generic.PingOfDeath" in names
    assert (
        results[1].verdict.action == Action.BLOCK_SOURCE
        and results[1].verdict.block_address == "10.66.0.1"
    )
    assert results[3].verdict.block_minutes == 60


def test_ssh_banners_event_and_buffers() -> None:
    rs = RuleSet.load(
        texts=[
            'alert ssh any any -> any any (msg:"old openssh"; ssh.software; content:"OpenSSH_5"; sid:70;)'
        ],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    e = Engine(rules=rs)
    c = TcpConv(sport=2222).handshake()
    c.send(b"SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n", toserver=False)
    c.send(b"SSH-2.0-OpenSSH_5.3\r\n")
    c.send(b"\x00\x00\x01\x00binary kex", toserver=False)
    events, _ = _run(e, c.frames)
    (ssh,) = [ev.data["ssh"] for ev in events if ev.event_type == "ssh"]
    assert ssh == {
        "client": {"proto_version": "2.0", "software_version": "OpenSSH_5.3"},
        "server": {"proto_version": "2.0", "software_version": "OpenSSH_9.6p1"},
    }
    assert [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"] == [70]


def test_pass_rule_passes_the_flow() -> None:
    rs = RuleSet.load(
        texts=[
            'pass tcp any any -> any 8443 (msg:"trusted backup"; content:"BACKUP"; sid:80;)\n'
            'alert tcp any any -> any any (msg:"marker"; content:"MARK"; sid:81;)'
        ],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    e = Engine(rules=rs)
    c = TcpConv(sport=8443).handshake()
    c.send(b"BACKUP MARK")
    c.send(b"later MARK")
    events, verdicts = _run(e, c.frames)
    assert not [ev for ev in events if ev.event_type == "alert"]
    # (When the rule engine reports the pass match, the whole TCP flow is also bypassed.)
    if e.stats()["passed"]:
        assert verdicts[-1] == Action.BYPASS
    e2 = Engine(rules=rs)
    c2 = TcpConv(sport=9443).handshake()
    c2.send(b"BACKUP MARK")
    ev2, _ = _run(e2, c2.frames)
    assert [x.data["alert"]["signature_id"] for x in ev2 if x.event_type == "alert"] == [81]


def test_tcp_port_reuse_starts_a_new_flow() -> None:
    e = Engine(EngineConfig(out_flow=True))
    first = TcpConv(cport=41000, cseq=1000).handshake()
    first.send(b"GET /one HTTP/1.1\r\nHost: a.example\r\n\r\n")
    first.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", toserver=False)
    first.fin()
    second = TcpConv(cport=41000, cseq=900_000, sseq=77_000, ts=first.ts + 1).handshake()
    second.send(b"GET /two HTTP/1.1\r\nHost: b.example\r\n\r\n")
    second.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", toserver=False)
    events, _ = _run(e, first.frames + second.frames)
    assert [ev.data["http"]["url"] for ev in events if ev.event_type == "http"] == ["/one", "/two"]
    flows = [ev for ev in events if ev.event_type == "flow"]
    assert len(flows) == 2 and flows[0].data["flow_id"] != flows[1].data["flow_id"]


def test_stream_content_split_deep_in_a_long_stream() -> None:
    rs = RuleSet.load(
        texts=[
            'alert tcp any any -> any any (msg:"marker"; flow:to_server; content:"SPLIT-MARKER-XYZ"; sid:90;)'
        ],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    e = Engine(rules=rs)
    c = TcpConv(sport=9999).handshake()
    data = b"f" * 10_000 + b"SPLIT-MARKER-XYZ" + b"g" * 9_000 + b"SPLIT-MARKER-XYZ" + b"h" * 100
    # 1000-byte segments: both markers straddle a segment boundary (10000 and 19016).
    for seg in c.segments(data, 1000)[::-1]:  # and arrive in reverse order
        c.emit(Ether(seg))
    events, _ = _run(e, c.frames)
    assert [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"] == [90]


def test_stream_content_split_in_order_twice() -> None:
    rs = RuleSet.load(
        texts=[
            'alert tcp any any -> any any (msg:"marker"; flow:to_server; content:"SPLIT-MARKER-XYZ"; sid:91;)'
        ],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    e = Engine(rules=rs)
    c = TcpConv(sport=9999).handshake()
    data = b"f" * 10_000 + b"SPLIT-MARKER-XYZ" + b"g" * 9_000 + b"SPLIT-MARKER-XYZ" + b"h" * 100
    for seg in c.segments(data, 1000):
        c.emit(Ether(seg))
    events, _ = _run(e, c.frames)
    # Two occurrences 9 KB apart: two alerts; neither is reported twice through the overlap.
    assert [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"] == [
        91,
        91,
    ]


def test_response_body_delimited_by_close_is_inspected_and_logged() -> None:
    rs = RuleSet.load(
        texts=[
            'alert http any any -> any any (msg:"payload in body"; file.data; content:"EVIL-BODY"; sid:95;)'
        ],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    e = Engine(rules=rs)
    c = TcpConv().handshake()
    c.send(b"GET /f HTTP/1.0\r\nHost: old.example\r\n\r\n")
    c.send(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nsome EVIL-BODY here", toserver=False
    )
    c.emit(c._pkt(False, "FA", c.sseq, c.cseq, b""))
    events, verdicts = _run(e, c.frames)
    assert [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"] == [95]
    (h,) = [ev.data["http"] for ev in events if ev.event_type == "http"]
    assert h["length"] == len(b"some EVIL-BODY here") and h["status"] == 200


def test_alert_carries_the_matching_pipelined_transaction() -> None:
    rs = RuleSet.load(
        texts=['alert http any any -> any any (msg:"second"; http.uri; content:"/two"; sid:96;)'],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    e = Engine(rules=rs)
    c = TcpConv().handshake()
    c.send(
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: b\r\n\r\nGET /three HTTP/1.1\r\nHost: c\r\n\r\n"
    )
    events, _ = _run(e, c.frames)
    (al,) = [ev.data for ev in events if ev.event_type == "alert"]
    assert al["tx_id"] == 1 and al["http"]["url"] == "/two" and al["http"]["hostname"] == "b"


class _Broken:
    def process(self, p):  # type: ignore[no-untyped-def]
        if p.dport == 666:
            raise RuntimeError("detector bug")
        return []


@pytest.mark.parametrize("policy,expected", [("pass", Action.ACCEPT), ("drop", Action.DROP)])
def test_a_faulty_detector_does_not_kill_the_engine(policy: str, expected: Action) -> None:
    e = Engine(EngineConfig(exception_policy=policy), attacks=_Broken())
    bad = e.process(udp_frame(CLIENT, SERVER, 1, 666, b"x"), 1.0)
    assert bad.verdict.action == expected
    (ev,) = bad.events
    assert (
        ev.data["anomaly"]["event"] == "engine.internal_error"
        and "detector bug" in ev.data["anomaly"]["error"]
    )
    good = e.process(udp_frame(CLIENT, SERVER, 1, 53, b"x"), 1.1)
    assert good.verdict.action == Action.ACCEPT
    st = e.stats()
    assert st["internal_errors"] == 1 and "RuntimeError" in st["last_internal_error"]


def test_flow_events_of_a_mass_eviction_are_not_capped() -> None:
    e = Engine(EngineConfig(flow_max=6400, out_flow=True, max_events_per_packet=4))
    n = 0
    for i in range(7000):
        r = e.process(udp_frame(CLIENT, SERVER, i % 60000 + 1, 7, b"x"), 10.0 + i / 1e6)
        n += sum(1 for ev in r.events if ev.event_type == "flow")
    n += sum(1 for ev in e.flush() if ev.event_type == "flow")
    assert n == 7000 and e.stats()["events_capped"] == 0
