"""The rule engine's contract with the packet pipeline: silent drops, per-transaction app-layer
alerts, defragmented datagrams, flow counters and event names in the context, pass rules that
pass the whole flow. Traffic is generated with scapy."""

from __future__ import annotations

from nids_capgen import CLIENT, SERVER, TcpConv, udp_frame
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from vmshield.engines.net.config import EngineConfig
from vmshield.engines.net.engine import Action, Engine
from vmshield.engines.net.rules import RuleSet

REQ = b"GET /a/b.php?id=1 HTTP/1.1\r\nHost: www.example.org\r\nUser-Agent: t\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
T0 = 1_700_000_000.0


def _engine(rules: str, mode: str = "ips") -> Engine:
    rs = RuleSet.from_text(rules)
    assert not rs.rejected, [str(e) for e in rs.rejected]
    return Engine(EngineConfig(mode=mode), rules=rs)


def _run(e: Engine, frames: list[tuple[float, bytes]]) -> tuple[list[Action], list[int]]:
    actions, sids = [], []
    for ts, fr in sorted(frames):
        r = e.process(fr, ts)
        actions.append(r.verdict.action)
        sids += [ev.data["alert"]["signature_id"] for ev in r.events if ev.event_type == "alert"]
    for ev in e.flush():
        if ev.event_type == "alert":
            sids.append(ev.data["alert"]["signature_id"])
    return actions, sorted(sids)


def _http(cport: int = 40000, ts: float = T0, requests: int = 1) -> TcpConv:
    c = TcpConv(cport=cport, ts=ts).handshake()
    for _ in range(requests):
        c.send(REQ)
        c.send(RESP, toserver=False)
    return c.fin()


# -- Alert.silent ----------------------------------------------------------------------------


def test_drop_past_its_threshold_still_drops_but_logs_once() -> None:
    e = _engine(
        "drop tcp any any -> any 80 (flags:S; "
        "threshold:type limit, track by_src, count 1, seconds 60; sid:1;)\n"
    )
    syn_actions = []
    sids: list[int] = []
    for i in range(3):
        c = TcpConv(cport=41000 + i, ts=T0 + i)
        c.handshake()
        ts, syn = c.frames[0]
        r = e.process(syn, ts)
        syn_actions.append(r.verdict.action)
        sids += [ev.data["alert"]["signature_id"] for ev in r.events if ev.event_type == "alert"]
    assert syn_actions == [Action.DROP] * 3  # every SYN dropped
    assert sids == [1]  # one alert: the others are past the limit
    assert e.stats()["silent_drops"] == 2
    assert e.stats()["alerts"] == 1


def test_noalert_drop_drops_the_flow_without_an_alert() -> None:
    e = _engine('drop http any any -> any any (http.uri; content:"b.php"; noalert; sid:2;)\n')
    c = _http()
    actions, sids = _run(e, c.frames)
    assert sids == []
    assert Action.DROP in actions
    # the request and everything after it on the flow is dropped
    first_drop = actions.index(Action.DROP)
    assert all(a >= Action.DROP for a in actions[first_drop:])


# -- Alert.tx_id -----------------------------------------------------------------------------


def test_two_identical_requests_on_one_connection_give_two_alerts() -> None:
    e = _engine(
        'alert http any any -> any any (http.uri; content:"b.php"; sid:11;)\n'
        'alert tcp any any -> any 80 (flow:to_server; content:"b.php"; sid:12;)\n',
        mode="ids",
    )
    _, sids = _run(e, _http(requests=2).frames)
    # app-layer: once per transaction; raw stream content: once per 4 KiB of the stream
    assert sids == [11, 11, 12]


# -- Packet.reassembled ----------------------------------------------------------------------


def test_only_frag_and_no_frag_on_a_defragmented_datagram() -> None:
    rules = (
        "alert udp any any -> any 5000 (flow:only_frag; sid:21;)\n"
        "alert udp any any -> any 5000 (flow:no_frag; sid:22;)\n"
    )
    e = _engine(rules, mode="ids")
    big = (
        Ether() / IP(src=CLIENT, dst=SERVER, id=77) / UDP(sport=999, dport=5000) / Raw(b"A" * 3000)
    )
    frames = [(T0 + i * 0.001, bytes(Ether() / f)) for i, f in enumerate(fragment(big[IP], 1000))]
    assert len(frames) > 1
    _, sids = _run(e, frames)
    assert sids == [21]
    e = _engine(rules, mode="ids")
    _, sids = _run(e, [(T0, udp_frame(CLIENT, SERVER, 999, 5000, b"small"))])
    assert sids == [22]


# -- flow counters and event names -----------------------------------------------------------


def test_flow_pkts_and_bytes_from_the_pipeline() -> None:
    e = _engine(
        "alert tcp any any -> any 80 (flow.pkts_toserver:4; flow:to_server; sid:31;)\n"
        "alert tcp any any -> any 80 (flow.bytes_toserver:>100000; sid:32;)\n",
        mode="ids",
    )
    _, sids = _run(e, _http().frames)
    # SYN, ACK, request, FIN: the 4th packet to the server matches once; bytes never reach 100k
    assert sids == [31]


def test_stream_event_retransmission_rule() -> None:
    e = _engine(
        "alert tcp any any -> any 80 (stream-event:pkt_retransmission; sid:41;)\n", mode="ids"
    )
    c = TcpConv().handshake().send(b"hello there")
    ts, data_frame = c.frames[-1]
    c.frames.append((ts + 0.01, data_frame))  # the same segment again
    _, sids = _run(e, c.fin().frames)
    assert sids == [41]
    e = _engine(
        "alert tcp any any -> any 80 (stream-event:pkt_retransmission; sid:41;)\n", mode="ids"
    )
    _, sids = _run(e, TcpConv().handshake().send(b"hello there").fin().frames)
    assert sids == []


def test_app_layer_event_rule() -> None:
    e = _engine(
        "alert http any any -> any any (app-layer-event:http.invalid_content_length_field_in_request; sid:42;)\n",
        mode="ids",
    )
    bad = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n"
    c = TcpConv().handshake().send(bad).fin()
    events = []
    for ts, fr in c.frames:
        events += e.process(fr, ts).events
    anomalies = [ev.data["anomaly"]["event"] for ev in events if ev.event_type == "anomaly"]
    alerts = [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"]
    assert "http.invalid_content_length_field_in_request" in anomalies
    assert alerts == [42]


# -- pass rules pass the flow ----------------------------------------------------------------


def test_pass_rule_passes_the_whole_udp_flow() -> None:
    e = _engine(
        'pass udp any any -> any 7000 (content:"hello"; sid:51;)\n'
        'drop udp any any -> any 7000 (content:"evil"; sid:52;)\n'
    )
    frames = [
        (T0, udp_frame(CLIENT, SERVER, 1234, 7000, b"evil first")),
        (T0 + 1, udp_frame(CLIENT, SERVER, 1235, 7000, b"hello")),
        (T0 + 2, udp_frame(CLIENT, SERVER, 1235, 7000, b"evil later")),
        (T0 + 3, udp_frame(SERVER, CLIENT, 7000, 1235, b"evil reply")),
    ]
    actions, sids = _run(e, frames)
    assert actions[0] == Action.DROP and sids == [52]  # another flow: not passed
    assert actions[1:] == [Action.BYPASS] * 3  # the passed flow, both directions
    assert e.stats()["passed"] == 1


def test_pass_rule_passes_the_tcp_flow_in_ids_mode_without_alerts() -> None:
    e = _engine(
        'pass tcp any any -> any 80 (content:"GET"; sid:61;)\n'
        'alert http any any -> any any (http.stat_code; content:"200"; sid:62;)\n',
        mode="ids",
    )
    actions, sids = _run(e, _http().frames)
    assert sids == []  # the response is part of the passed flow
    assert set(actions) == {Action.ACCEPT}  # ids mode never hands out bypass verdicts


# -- one-way bulk flows are bypassed (Suricata's stream.bypass: first side at depth) ---------


def _ack(c: TcpConv, toserver: bool = False) -> None:
    c.emit(c._pkt(toserver, "A", c.sseq if not toserver else c.cseq,
                  c.cseq if not toserver else c.sseq, b""))  # fmt: skip


def _upload(c: TcpConv, total: int, seg: int = 500) -> None:
    for off in range(0, total, seg):
        c.send(bytes([65 + off // seg % 26]) * seg)
        _ack(c)


def test_one_way_upload_past_depth_is_bypassed_after_inspection() -> None:
    e = Engine(
        EngineConfig(mode="ips", stream_depth=2000),
        rules=RuleSet.from_text('alert tcp any any -> any 5201 (content:"BBBB"; sid:71;)\n'),
    )
    c = TcpConv(sport=5201).handshake()
    c.send(b"cookie-0123456789")  # iperf-like: a few bytes, then one direction only
    _upload(c, 6000)
    actions, sids = _run(e, c.frames)
    assert sids == [71]  # the bytes up to the depth were inspected
    first = actions.index(Action.BYPASS)
    # bypassed once the client's direction passed 2000 bytes, and stays bypassed
    assert 8 <= first < len(actions) - 10
    assert all(a == Action.BYPASS for a in actions[first:])
    assert e.stats()["bypassed_flows"] == 1


def test_http_upload_waits_for_the_response_before_bypass() -> None:
    e = Engine(
        EngineConfig(mode="ips", stream_depth=2000),
        rules=RuleSet.from_text(
            'alert http any any -> any any (http.stat_code; content:"201"; sid:72;)\n'
        ),
    )
    c = TcpConv().handshake()
    c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 6000\r\n\r\n")
    _upload(c, 6000)
    n_upload = len(c.frames)
    c.send(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", toserver=False)
    _ack(c, toserver=True)
    actions, sids = _run(e, c.frames)
    assert Action.BYPASS not in actions[:n_upload]  # the response is still to come
    assert sids == [72]  # and it is inspected
    assert actions[-1] == Action.BYPASS


def test_out_of_order_data_on_the_other_side_holds_the_bypass() -> None:
    e = Engine(
        EngineConfig(mode="ips", stream_depth=1000),
        rules=RuleSet.from_text('alert tcp any 9100 -> any any (content:"LATE"; sid:73;)\n'),
    )
    c = TcpConv(sport=9100).handshake()
    # the server sends two segments, the first is lost for now: the second waits in order
    segs = c.segments(b"x" * 100 + b"LATE-DATA", 100, toserver=False)
    c.ts += 0.001
    c.frames.append((c.ts, segs[1]))
    _upload(c, 3000)
    n_before = len(c.frames)
    c.ts += 0.001
    c.frames.append((c.ts, segs[0]))  # the gap fills: "LATE" is now in order
    _ack(c, toserver=True)
    actions, sids = _run(e, c.frames)
    assert Action.BYPASS not in actions[:n_before]
    assert sids == [73]
    assert actions[-1] == Action.BYPASS


def test_ids_mode_never_bypasses() -> None:
    e = Engine(EngineConfig(mode="ids", stream_depth=1000))
    c = TcpConv(sport=5201).handshake()
    _upload(c, 4000)
    actions, _ = _run(e, c.frames)
    assert set(actions) == {Action.ACCEPT}


# -- fast paths keep the semantics ------------------------------------------------------------


def test_rules_that_can_match_bare_acks_still_see_them() -> None:
    # header-only (flags), header buffer with a fast pattern (tcp.hdr) and IP-only rules on a
    # connection whose other packets carry data
    e = _engine(
        "alert tcp any any -> any 80 (flags:F+; flow:to_server; sid:81;)\n"
        'alert tcp any any -> any 80 (tcp.hdr; content:"|50 10|"; offset:12; depth:2; sid:82;)\n'
        "alert ip 10.1.0.20 any -> any any (sid:83;)\n"
        'alert tcp any any -> any 80 (content:"b.php"; sid:84;)\n',
        mode="ids",
    )
    _, sids = _run(e, _http().frames)
    # FIN to the server; the client's bare ACKs (data offset 5, flags ACK: handshake and
    # close); the server's direction once (IP-only); the request content once
    assert sids.count(81) == 1 and sids.count(83) == 1 and sids.count(84) == 1
    assert sids.count(82) == 2


def test_dsize_rule_sees_the_segment_payload_of_a_tcp_stream() -> None:
    e = _engine(
        'alert tcp any any -> any 9000 (dsize:5; content:"hello"; sid:91;)\n'
        'alert tcp any any -> any 9000 (content:"hello"; sid:92;)\n',
        mode="ids",
    )
    c = TcpConv(sport=9000).handshake().send(b"hello").send(b"hello world").fin()
    _, sids = _run(e, c.frames)
    assert sids == [91, 92]  # dsize: the 5-byte segment only; stream: once per 4 KiB


def test_tls_version_and_ja3s_rules_on_a_handshake() -> None:
    import hashlib

    from nids_capgen import client_hello, server_hello

    ja3s = hashlib.md5(b"771,47,65281").hexdigest()  # the JA3S string the EVE test checks
    e = _engine(
        "alert tls any any -> any any (tls.version:1.2; sid:101;)\n"
        "alert tls any any -> any any (tls.version:1.3; sid:102;)\n"
        f'alert tls any any -> any any (ja3s.hash; content:"{ja3s}"; sid:103;)\n',
        mode="ids",
    )
    c = TcpConv(sport=443).handshake()
    c.send(client_hello("tls.example", ciphers=[47, 53], groups=[23], point_formats=[0]))
    c.send(server_hello(47, [(0xFF01, b"\x00")]), toserver=False)
    _, sids = _run(e, c.fin().frames)
    assert sids == [101, 103]


def test_passed_flow_without_bypass_enabled_is_accepted_not_bypassed() -> None:
    rs = RuleSet.from_text('pass udp any any -> any 7000 (content:"hello"; sid:51;)\n')
    e = Engine(EngineConfig(mode="ips", bypass=False), rules=rs)
    frames = [
        (T0, udp_frame(CLIENT, SERVER, 1235, 7000, b"hello")),
        (T0 + 1, udp_frame(CLIENT, SERVER, 1235, 7000, b"more")),
    ]
    actions, _ = _run(e, frames)
    assert actions == [Action.ACCEPT, Action.ACCEPT]
    assert e.stats()["passed"] == 1
