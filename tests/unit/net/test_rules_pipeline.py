"""The rule engine inside the packet pipeline (engine.py): flowbits across request and response,
IP-only signatures once per flow direction, one alert per HTTP transaction, thresholds across
connections, pass rules, byte_jump on a TCP stream. Traffic is generated with scapy."""

from __future__ import annotations

from nids_capgen import TcpConv

from vmshield.engines.net.config import EngineConfig
from vmshield.engines.net.engine import Engine
from vmshield.engines.net.rules import RuleSet

REQ = b"GET /a/b.php?id=1 HTTP/1.1\r\nHost: www.example.org\r\nUser-Agent: t\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"


def _alerts(rules: str, convs: list[TcpConv], mode: str = "ids") -> list[int]:
    rs = RuleSet.from_text(rules)
    assert not rs.rejected, [str(e) for e in rs.rejected]
    e = Engine(EngineConfig(mode=mode), rules=rs)
    frames = sorted(f for c in convs for f in c.frames)
    events = []
    for ts, f in frames:
        events.extend(e.process(f, ts).events)
    events.extend(e.flush())
    return sorted(ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert")


def _http(cport: int = 40000, ts: float = 1_700_000_000.0, requests: int = 1) -> TcpConv:
    c = TcpConv(cport=cport, ts=ts).handshake()
    for _ in range(requests):
        c.send(REQ)
        c.send(RESP, toserver=False)
    return c.fin()


def test_flowbits_from_request_to_response() -> None:
    rules = (
        'alert http any any -> any any (flow:to_server; http.method; content:"GET"; '
        "flowbits:set,got_get; flowbits:noalert; sid:1;)\n"
        'alert http any any -> any any (flow:to_client; flowbits:isset,got_get; http.stat_code; content:"200"; sid:2;)\n'
        'alert http any any -> any any (flow:to_client; flowbits:isnotset,got_get; http.stat_code; content:"200"; sid:3;)\n'
    )
    assert _alerts(rules, [_http()]) == [2]


def test_ip_only_rule_once_per_direction_and_tx_rule_once_per_request() -> None:
    rules = (
        'alert ip any any -> any any (msg:"ip-only"; sid:10;)\n'
        'alert http any any -> any any (http.uri; content:"b.php"; sid:11;)\n'
    )
    # two connections: the IP-only rule fires once for each direction of each flow (not for
    # every packet), the URI rule once per transaction
    convs = [_http(cport=40001), _http(cport=40002, ts=1_700_000_001.0)]
    assert _alerts(rules, convs) == [10, 10, 10, 10, 11, 11]


def test_threshold_limit_across_connections_by_src() -> None:
    rules = "alert tcp any any -> any 80 (flags:S; threshold:type limit, track by_src, count 1, seconds 60; sid:20;)\n"
    convs = [_http(cport=40000 + i, ts=1_700_000_000.0 + i) for i in range(3)]
    assert _alerts(rules, convs) == [20]


def test_pass_rule_suppresses_drop_in_ips_mode() -> None:
    rules = (
        'drop http any any -> any any (http.uri; content:"b.php"; sid:30;)\n'
        'pass http any any -> any any (http.host; content:"www.example.org"; sid:31;)\n'
        'alert http any any -> any any (http.user_agent; content:"t"; sid:32;)\n'
    )
    assert _alerts(rules, [_http()], mode="ips") == []


def test_byte_jump_over_a_length_prefixed_field_in_the_stream() -> None:
    c = TcpConv(sport=9000).handshake()
    c.send(b"\x00\x05helloCMD:shutdown")
    c.fin()
    rules = (
        "alert tcp any any -> any 9000 (flow:to_server,established; byte_jump:2,0; "
        'content:"CMD:"; within:4; sid:40;)\n'
        "alert tcp any any -> any 9000 (flow:to_server,established; byte_jump:2,0; "
        'content:"CMD:"; distance:1; within:4; sid:41;)\n'
    )
    assert _alerts(rules, [c]) == [40]
