"""Matching semantics as Suricata documents them."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from _rules_util import ctx, one, pkt, rules, run, sids

from vmshield.engines.net.rules import FlowDetectState, RuleSet


# -- content and its modifiers ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("opts", "payload", "hit"),
    [
        ('content:"abc";', b"xxabcxx", True),
        ('content:"ABC";', b"xxabcxx", False),
        ('content:"ABC"; nocase;', b"xxabcxx", True),
        ('content:"|41 42|C";', b"ABC", True),
        ('content:"def"; offset:3; depth:3;', b"abcdef", True),
        ('content:"def"; offset:4;', b"abcdef", False),
        ('content:"abc"; depth:3;', b"xabc", False),
        ('content:"abc"; depth:4;', b"xabc", True),
        ('content:"abc"; content:"def"; distance:0;', b"abcdef", True),
        ('content:"abc"; content:"def"; distance:1;', b"abcdef", False),
        ('content:"abc"; content:"def"; distance:1;', b"abcXdef", True),
        ('content:"abc"; content:"def"; within:3;', b"abcdef", True),
        ('content:"abc"; content:"def"; within:3;', b"abcXdef", False),
        ('content:"abc"; content:"def"; distance:2; within:3;', b"abcXXdef", True),
        ('content:"abc"; content:"def"; distance:-6;', b"defabc", True),  # negative distance
        # backtracking: the first "a" fails the relative check; the second succeeds
        ('content:"a"; content:"b"; distance:0; within:1;', b"a.ab", True),
        ('content:"GET"; content:!"admin";', b"GET /index", True),
        ('content:"GET"; content:!"admin";', b"GET /admin", False),
        ('content:"GET"; content:!"admin"; distance:0; within:6;', b"GET 1234567admin", True),
        ('content:"GET"; content:!"admin"; distance:0; within:7;', b"GET admin", False),
        ('content:"GET"; startswith;', b"GET /", True),
        ('content:"GET"; startswith;', b" GET /", False),
        ('content:".exe"; endswith;', b"/a.exe", True),
        ('content:".exe"; endswith;', b"/a.exe?x", False),
        ('content:"a"; content:"c"; distance:0; endswith;', b"abc", True),
        # isdataat
        ("isdataat:5;", b"123456", True),
        ("isdataat:6;", b"123456", False),
        ('content:"12"; isdataat:4,relative;', b"123456", True),
        ('content:"12"; isdataat:5,relative;', b"123456", False),
        ('content:"56"; isdataat:!1,relative;', b"123456", True),
        ('content:"45"; isdataat:!1,relative;', b"123456", False),
        # pcre
        ('pcre:"/ab+c/";', b"xabbbc", True),
        ('pcre:"/AB+C/i";', b"xabbbc", True),
        ('pcre:"/^abc/";', b"xabc", False),
        ('content:"x"; pcre:"/^abc/R";', b"xabc", True),
        ('content:"x"; pcre:"/^abc/R";', b"xzabc", False),
        ('pcre:"/a.b/";', b"a\nb", False),
        ('pcre:"/a.b/s";', b"a\nb", True),
        ('pcre:"/^b$/m";', b"a\nb\nc", True),
        ('pcre:"/a b c/x";', b"abc", True),
        ('pcre:!"/evil/";', b"good", True),
        ('pcre:!"/evil/";', b"evil", False),
        ('pcre:"/\\x{41}\\z/";', b"zA", True),
        # pcre then relative content: retried on the next regex match
        ('pcre:"/a[0-9]/"; content:"z"; distance:0; within:1;', b"a1.a2z", True),
    ],
)
def test_payload_semantics(opts: str, payload: bytes, hit: bool) -> None:
    assert one(opts, payload) is hit


@pytest.mark.parametrize(
    ("opts", "payload", "hit"),
    [
        ("byte_test:1,=,65,0;", b"A", True),
        ("byte_test:1,!=,65,0;", b"A", False),
        ("byte_test:2,>,0x100,0;", b"\x01\x01", True),
        ("byte_test:2,>,0x100,0,little;", b"\x01\x01", True),
        ("byte_test:2,=,0x0201,0,little;", b"\x01\x02", True),
        ("byte_test:1,&,0x80,0;", b"\x81", True),
        ("byte_test:1,&,0x80,0;", b"\x01", False),
        ("byte_test:3,=,123,0,string,dec;", b"123", True),
        ("byte_test:2,=,255,0,string,hex;", b"ff", True),
        ("byte_test:3,=,123,0,string,dec;", b"1x3", False),
        ('content:"ab"; byte_test:1,=,1,1,relative;', b"ab.\x01", True),
        ("byte_test:2,=,1,5;", b"abc", False),  # out of bounds never matches
        ("byte_test:2,=,0x0f,0,bitmask 0x0ff0;", b"\x00\xf0", True),
        # byte_jump: length-prefixed field, then a relative content right after it
        ('byte_jump:1,0; content:"X"; distance:0; within:1;', b"\x03abcX", True),
        ('byte_jump:1,0; content:"X"; distance:0; within:1;', b"\x02abcX", False),
        ("byte_jump:1,0;", b"\x03abX", False),  # lands on the end: outside the buffer
        ('byte_jump:1,0; content:"X"; distance:0; within:1;', b"\x02abX", True),
        ('byte_jump:1,0,multiplier 2; content:"X"; within:1;', b"\x02abcdX", True),
        ('byte_jump:1,0,post_offset 1; content:"X"; within:1;', b"\x01a-X", True),
        ("byte_jump:1,0;", b"\x05ab", False),  # jumps past the end
        ('byte_jump:1,0,from_beginning; content:"X"; within:1;', b"\x02-X", True),
        ('byte_jump:1,0,align; content:"X"; within:1;', b"\x01abcdX", True),
        ('byte_jump:1,0,align; content:"X"; within:1;', b"\x01aX", False),
        # byte_extract: the variable drives a later keyword
        ('byte_extract:1,0,len; content:"END"; distance:len; within:3;', b"\x02abEND", True),
        ('byte_extract:1,0,len; content:"END"; distance:len; within:3;', b"\x03abEND", False),
        ("byte_extract:1,0,val; byte_test:1,=,val,1;", b"\x07\x07", True),
        ("byte_extract:1,0,val; byte_test:1,=,val,1;", b"\x07\x08", False),
        ("byte_extract:2,0,n,string,dec; isdataat:n;", b"10" + b"x" * 9, True),
        ("byte_extract:2,0,n,string,dec; isdataat:n;", b"11" + b"x" * 9, False),
        # the payload-keywords examples: jump from the end, then relative content
        (
            'byte_jump:0,0,from_end,post_offset -8; content:"|6c 33 33 74|"; distance:0; within:4;',
            b"xxxxxxxxl33t0000",
            True,
        ),
        (
            'byte_jump:0,0,from_end,post_offset -8; content:"|6c 33 33 74|"; distance:0; within:4;',
            b"xxxxxxxl33t00000",
            False,
        ),
        (
            'content:"|00 FF|"; byte_extract:1,0,len,relative; content:"|5c 00|"; distance:2; within:len;',
            b"\x00\xff\x05ab\x5c\x00",
            True,
        ),
        (
            'content:"|00 FF|"; byte_extract:1,0,len,relative; content:"|5c 00|"; distance:2; within:len;',
            b"\x00\xff\x01ab\x5c\x00",
            False,
        ),
        # a byte count taken from a variable
        ("byte_extract:1,0,n; byte_test:n,=,0x0102,1;", b"\x02\x01\x02", True),
        ("byte_extract:1,0,n; byte_test:n,=,0x0102,1;", b"\x09\x01\x02", False),
        # byte_math
        (
            "byte_math:bytes 1, offset 0, oper +, rvalue 2, result s; byte_test:1,=,s,1;",
            b"\x03\x05",
            True,
        ),
        (
            "byte_math:bytes 1, offset 0, oper *, rvalue 3, result s; byte_test:1,=,s,1;",
            b"\x03\x09",
            True,
        ),
        ("byte_math:bytes 1, offset 0, oper /, rvalue 0, result s;", b"\x03", False),
        (
            "byte_math:bytes 1, offset 0, oper <<, rvalue 1, result s; byte_test:1,=,s,1;",
            b"\x03\x06",
            True,
        ),
        (
            "byte_math:bytes 2, offset 0, oper -, rvalue 1, result s, endian little; byte_test:1,=,s,2;",
            b"\x05\x00\x04",
            True,
        ),
    ],
)
def test_byte_keywords(opts: str, payload: bytes, hit: bool) -> None:
    assert one(opts, payload) is hit


# -- header options -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("opts", "flags", "hit"),
    [
        ("flags:S;", 0x02, True),
        ("flags:S;", 0x12, False),  # exact by default
        ("flags:S+;", 0x12, True),
        ("flags:+S;", 0x12, True),
        ("flags:*SF;", 0x01, True),
        ("flags:*SF;", 0x10, False),
        ("flags:!S;", 0x10, True),
        ("flags:!S;", 0x02, False),
        ("flags:S,CE;", 0xC2, True),  # CWR/ECE ignored by the mask
        ("flags:S,12;", 0xC2, True),
        ("flags:0;", 0x00, True),
        ("flags:0;", 0x10, False),
        ("flags:SA;", 0x12, True),
    ],
)
def test_flags(opts: str, flags: int, hit: bool) -> None:
    assert one(opts, b"", tcp_flags=flags) is hit


def test_numeric_header_keywords() -> None:
    assert one("dsize:3;", b"abc") and not one("dsize:3;", b"abcd")
    assert one("dsize:>3;", b"abcd") and one("dsize:<3;", b"ab")
    assert one("dsize:2<>5;", b"abcd") and not one("dsize:2<>5;", b"ab")  # exclusive range
    assert not one("dsize:2<>5;", b"abcde")
    assert one("dsize:!3;", b"ab") and not one("dsize:!3;", b"abc")
    assert one("ttl:<10;", b"", ttl=5) and not one("ttl:<10;", b"", ttl=64)
    assert one("ttl:64;", b"", ttl=64) and one("ttl:>=64;", b"", ttl=64)
    assert one("id:31337;", b"", ip_id=31337) and not one("id:31337;", b"", ip_id=1)
    assert one("sameip;", b"", src="10.0.0.5", dst="10.0.0.5")
    assert not one("sameip;", b"", src="10.0.0.5", dst="10.0.0.6")
    assert one("ip_proto:TCP;", b"") and one("ip_proto:6;", b"") and not one("ip_proto:!6;", b"")
    assert one("ip_proto:17;", b"", header="alert ip any any -> any any", proto=17)


def test_icmp_keywords() -> None:
    h = "alert icmp any any -> any any"
    # decoder payload of an echo request: id, seq, then data
    echo = b"\x12\x34\x00\x07payload"
    kw = {"proto": 1, "icmp_type": 8, "icmp_code": 0, "sport": 0, "dport": 0}
    assert one("itype:8; icode:0;", echo, header=h, **kw)
    assert not one("itype:0;", echo, header=h, **kw)
    assert one("itype:>5;", echo, header=h, **kw)
    assert one("icmp_id:4660; icmp_seq:7;", echo, header=h, **kw)
    assert not one("icmp_seq:8;", echo, header=h, **kw)
    # content on ICMP sees the data after the 8-byte header, as in Suricata
    assert one('content:"payload"; depth:7;', echo, header=h, **kw)
    assert not one("itype:8;", b"", header=h)  # a TCP packet is not ICMP


def test_header_addresses_ports_direction() -> None:
    rs = rules(
        "alert tcp $HOME_NET any -> $EXTERNAL_NET 80 (sid:1;)\n"
        "alert tcp $EXTERNAL_NET 80 <> $HOME_NET any (sid:2;)\n"
        "alert udp any any -> any 53 (sid:3;)\n"
        "alert tcp any any -> [10.0.0.0/8,!10.0.0.9] any (sid:4;)\n"
        "alert ip any any -> any any (sid:5;)\n"
    )
    assert run(rs, src="10.0.0.1", dst="8.8.8.8", dport=80) == [1, 2, 5]
    assert run(rs, src="8.8.8.8", dst="10.0.0.1", sport=80, dport=40000) == [2, 4, 5]
    assert run(rs, src="8.8.8.8", dst="10.0.0.9", sport=80, dport=40000) == [2, 5]
    assert run(rs, src="10.0.0.1", dst="10.0.0.2", dport=53, proto=17) == [3, 5]


def test_flow_keyword() -> None:
    rs = rules(
        "alert tcp any any -> any any (flow:to_server,established; sid:1;)\n"
        "alert tcp any any -> any any (flow:from_server; sid:2;)\n"
        "alert tcp any any -> any any (flow:not_established; sid:3;)\n"
        "alert tcp any any -> any any (flow:stateless; sid:4;)\n"
    )
    assert run(rs, direction="to_server", established=True) == [1, 4]
    assert run(rs, direction="to_client", established=True) == [2, 4]
    assert run(rs, direction="to_server", established=False) == [3, 4]
    assert run(rs, direction=None, established=False) == []  # not part of a flow


def test_stream_and_packet_inspection() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"split"; sid:1;)\n'
        'alert tcp any any -> any any (flow:only_stream; content:"split"; sid:2;)\n'
        'alert tcp any any -> any any (flow:no_stream; content:"split"; sid:3;)\n'
        'alert tcp any any -> any any (content:"spl"; dsize:3; sid:4;)\n'
    )
    # the pattern spans two segments: only the reassembled stream shows it
    assert run(rs, b"lit", stream=b"split") == [1, 2]
    assert run(rs, b"spl", stream=b"xsplit") == [1, 2, 4]
    assert run(rs, b"split") == [1, 3]  # no stream (e.g. UDP or before reassembly)


# -- flowbits / flowint across packets ----------------------------------------------------------
def test_flowbits_sequence() -> None:
    rs = rules(
        'alert tcp any any -> any any (msg:"login"; content:"login"; flowbits:set,userlogin; flowbits:noalert; sid:1;)\n'
        'alert tcp any any -> any any (msg:"db"; content:"db"; flowbits:isset,userlogin; sid:2;)\n'
        'alert tcp any any -> any any (content:"db"; flowbits:isnotset,userlogin; sid:3;)\n'
        'alert tcp any any -> any any (content:"logout"; flowbits:unset,userlogin; sid:4;)\n'
    )
    fs = FlowDetectState()
    assert run(rs, b"db", fs) == [3]
    assert run(rs, b"login", fs) == []  # noalert
    assert fs.has_bit("userlogin")
    assert run(rs, b"db", fs) == [2]
    assert run(rs, b"db", FlowDetectState()) == [3]  # another flow has its own bits
    assert run(rs, b"logout", fs) == [4]
    assert run(rs, b"db", fs) == [3]
    assert run(rs, b"db", None) == [3]  # no flow: isset never matches


def test_flowbits_set_before_isset_in_one_packet_and_groups() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"b"; flowbits:isset,a|x; sid:1;)\n'
        'alert tcp any any -> any any (content:"ab"; flowbits:set,a; sid:2;)\n'
        'alert tcp any any -> any any (content:"b"; flowbits:isset,a&x; sid:3;)\n'
        'alert tcp any any -> any any (content:"t"; flowbits:toggle,x; sid:4;)\n'
    )
    fs = FlowDetectState()
    # the setter is evaluated before the checker in the same packet, as Suricata orders them
    assert run(rs, b"ab", fs) == [1, 2]
    assert run(rs, b"t", fs) == [4] and fs.has_bit("x")
    assert run(rs, b"b", fs) == [1, 3]
    run(rs, b"t", fs)
    assert not fs.has_bit("x")


def test_flowint_counting() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"USER"; flowint:users,+,1; flowint:users,>,2; sid:1;)\n'
        'alert tcp any any -> any any (content:"RESET"; flowint:users,=,0; flowbits:noalert; sid:2;)\n'
        'alert tcp any any -> any any (content:"CHK"; flowint:users,isset; sid:3;)\n'
    )
    fs = FlowDetectState()
    assert run(rs, b"CHK", fs) == []
    # flowint keywords run in rule order after the payload: +1, then the >2 test
    hits = [run(rs, b"USER", fs) for _ in range(4)]
    assert hits == [[], [], [1], [1]] and fs.get_int("users") == 4
    assert run(rs, b"CHK", fs) == [3]
    run(rs, b"RESET", fs)
    assert fs.get_int("users") == 0
    assert run(rs, b"USER", None) == []  # no flow, no counter


def test_flowint_threshold_pattern() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"fail"; flowint:fails,+,1; flowbits:noalert; sid:1;)\n'
        'alert tcp any any -> any any (content:"fail"; flowint:fails,>=,3; sid:2;)\n'
    )
    fs = FlowDetectState()
    got = [run(rs, b"fail", fs) for _ in range(4)]
    assert got == [[], [], [2], [2]]


# -- thresholds over time -----------------------------------------------------------------------
def _times(rs: RuleSet, times: list[float], **kw: object) -> list[bool]:
    return [run(rs, b"x", ts=t, **kw) == [1] for t in times]  # type: ignore[arg-type]


def test_threshold_limit() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"x"; threshold:type limit, track by_src, count 2, seconds 60; sid:1;)'
    )
    assert _times(rs, [0, 1, 2, 3, 61, 62, 63]) == [True, True, False, False, True, True, False]
    assert run(rs, b"x", ts=63, src="10.9.9.9") == [1]  # another source has its own count


def test_threshold_threshold() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"x"; threshold:type threshold, track by_dst, count 3, seconds 60; sid:1;)'
    )
    got = _times(rs, [0, 1, 2, 3, 4, 5, 6])
    assert got == [False, False, True, False, False, True, False]


def test_threshold_both() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"x"; threshold:type both, track by_src, count 3, seconds 60; sid:1;)'
    )
    assert _times(rs, [0, 1, 2, 3, 4, 70, 71, 72]) == [
        False,
        False,
        True,
        False,
        False,
        False,
        False,
        True,
    ]


def test_threshold_window_includes_last_second_and_silent_drops() -> None:
    rs = rules(
        'drop tcp any any -> any any (content:"x"; threshold:type limit, track by_rule, count 1, seconds 10; sid:1;)'
    )
    got = [rs.match(ctx(pkt(b"x", ts=t))) for t in (0, 10, 10.5)]
    # t=10 is inside the window [0, 10]: the drop applies, silently; 10.5 opens a new window
    assert [(a.sid, a.silent) for al in got for a in al] == [(1, False), (1, True), (1, False)]


def test_detection_filter() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"x"; detection_filter:track by_src, count 2, seconds 60; sid:1;)'
    )
    assert _times(rs, [0, 1, 2, 3, 100, 101, 102]) == [False, False, True, True, False, False, True]


# -- app-layer buffers --------------------------------------------------------------------------
def test_http_buffers_and_legacy_modifiers() -> None:
    rs = rules(
        'alert http any any -> any any (http.method; content:"POST"; http.uri; content:"/login"; startswith; sid:1;)\n'
        'alert tcp any any -> any any (content:"POST"; http_method; content:"login"; http_uri; sid:2;)\n'
        'alert http any any -> any any (http.host; content:"evil.example"; endswith; sid:3;)\n'
        'alert http any any -> any any (http.user_agent; content:"curl"; sid:4;)\n'
        'alert http any any -> any any (pcre:"/^\\/login\\?u=\\w+$/U"; sid:5;)\n'
        'alert http any any -> any any (http.stat_code; content:"404"; sid:6;)\n'
        "alert http any any -> any any (urilen:>5; sid:7;)\n"
        "alert http any any -> any any (http.uri; bsize:<5; sid:8;)\n"
        'alert http any any -> any any (uricontent:"u=bob"; sid:9;)\n'
        'alert http any any -> any any (http_request_line; content:"POST /login"; startswith; sid:10;)\n'
    )
    bufs = {"http.method": b"POST", "http.uri": b"/login?u=bob", "http.host": b"www.evil.example",
            "http.user_agent": b"curl/8.0", "http.request_line": b"POST /login?u=bob HTTP/1.1"}  # fmt: skip
    assert run(rs, b"", app_proto="http", buffers=bufs) == [1, 2, 3, 4, 5, 7, 9, 10]
    # an `alert http` rule needs the flow to be HTTP; an `alert tcp` one with buffers does not
    assert run(rs, b"", app_proto=None, buffers=bufs) == [2]
    resp = {"http.stat_code": b"404", "http.uri": b"/"}
    assert run(rs, b"", app_proto="http", buffers=resp, direction="to_client") == [6]
    assert run(rs, b"", app_proto="http", buffers=resp) == [8]


def test_app_layer_alert_once_per_transaction() -> None:
    rs = rules(
        'alert http any any -> any any (http.uri; content:"/x"; sid:1;)\nalert tcp any any -> any any (content:"pkt"; sid:2;)'
    )
    fs = FlowDetectState()
    b = {"http.uri": b"/x"}
    assert run(rs, b"pkt", fs, app_proto="http", buffers=b, tx_id=0) == [1, 2]
    assert run(rs, b"pkt", fs, app_proto="http", buffers=b, tx_id=0) == [2]
    assert run(rs, b"", fs, app_proto="http", buffers=b, tx_id=1) == [1]
    # the alert says which transaction it belongs to; packet alerts belong to none
    al = rs.match(ctx(pkt(b"pkt"), flow_state=fs, app_proto="http", buffers=b, tx_id=7))
    assert sorted((a.sid, a.tx_id) for a in al) == [(1, 7), (2, None)]


def test_app_layer_state_updates_once_per_transaction() -> None:
    rs = rules(
        'alert http any any -> any any (http.uri; content:"/login"; flowint:logins,+,1; noalert; sid:1;)\n'
        'alert http any any -> any any (http.uri; content:"/t"; flowbits:toggle,t; noalert; sid:2;)\n'
    )
    fs = FlowDetectState()
    for _ in range(3):  # the same transaction seen with three packets
        run(rs, b"", fs, app_proto="http", buffers={"http.uri": b"/login/t"}, tx_id=0)
    assert fs.get_int("logins") == 1 and fs.has_bit("t")
    run(rs, b"", fs, app_proto="http", buffers={"http.uri": b"/login/t"}, tx_id=1)
    assert fs.get_int("logins") == 2 and not fs.has_bit("t")


def test_dns_multi_buffer_and_tls() -> None:
    rs = rules(
        'alert dns any any -> any any (dns.query; content:"bad.example"; nocase; endswith; sid:1;)\n'
        'alert tls any any -> any any (tls.sni; content:"evil.test"; sid:2;)\n'
        'alert tls any any -> any any (ja3.hash; content:"e7eca2baf4458d095b7f45da28c16c34"; sid:3;)\n'
        "alert tls any any -> any any (tls.version:1.2; sid:4;)\n"
        # Suricata lower-cases ja3.hash contents: a hash copied in upper case still matches
        'alert tls any any -> any any (ja3.hash; content:"E7ECA2BAF4458D095B7F45DA28C16C34"; sid:5;)\n'
    )
    assert run(
        rs,
        app_proto="dns",
        proto=17,
        dport=53,
        buffers={"dns.query": [b"ok.org", b"x.BAD.example"]},
    ) == [1]
    assert run(rs, app_proto="dns", proto=17, dport=53, buffers={"dns.query": [b"ok.org"]}) == []
    tls = {
        "tls.sni": b"www.evil.test",
        "ja3.hash": b"e7eca2baf4458d095b7f45da28c16c34",
        "tls.version": b"\x03\x03",
    }
    assert run(rs, app_proto="tls", dport=443, buffers=tls) == [2, 3, 4, 5]


def test_transforms() -> None:
    rs = rules(
        'alert dns any any -> any any (dns.query; dotprefix; content:".example.com"; endswith; sid:1;)\n'
        'alert http any any -> any any (http.uri; url_decode; content:"/a b/<script>"; sid:2;)\n'
        'alert http any any -> any any (http.request_body; from_base64; content:"secret"; sid:3;)\n'
        'alert http any any -> any any (http.header; to_lowercase; content:"x-evil: yes"; sid:4;)\n'
        'alert http any any -> any any (http.request_body; strip_whitespace; content:"a=1&b=2"; sid:5;)\n'
        'alert http any any -> any any (http.cookie; to_sha256; content:"|'
        + hashlib.sha256(b"id=42").hexdigest()
        + '|"; sid:6;)\n'
        'alert http any any -> any any (http.request_body; xor:"0102"; content:"hi"; sid:7;)\n'
    )
    assert run(rs, app_proto="dns", proto=17, buffers={"dns.query": b"example.com"}) == [1]
    assert run(rs, app_proto="dns", proto=17, buffers={"dns.query": b"notexample.com"}) == []
    assert run(rs, app_proto="http", buffers={"http.uri": b"/a+b/%3Cscript%3E"}) == [2]
    body = base64.b64encode(b"the secret!")
    assert run(rs, app_proto="http", buffers={"http.request_body": body}) == [3]
    assert run(rs, app_proto="http", buffers={"http.header": b"Host: a\r\nX-Evil: YES\r\n"}) == [4]
    assert run(rs, app_proto="http", buffers={"http.request_body": b"a = 1 &\tb=2"}) == [5]
    assert run(rs, app_proto="http", buffers={"http.cookie": b"id=42"}) == [6]
    assert run(
        rs, app_proto="http", buffers={"http.request_body": bytes([ord("h") ^ 1, ord("i") ^ 2])}
    ) == [7]


def test_datasets(tmp_path: Path) -> None:
    (tmp_path / "ua.lst").write_text(
        base64.b64encode(b"BadBot/1.0").decode()
        + "\n"
        + base64.b64encode(b"evil-agent").decode()
        + "\n"
    )
    (tmp_path / "bad.sha256").write_text(hashlib.sha256(b"malware body").hexdigest() + "\n")
    rf = tmp_path / "ds.rules"
    rf.write_text(
        "alert http any any -> any any (http.user_agent; dataset:isset,ua-bad, type string, load ua.lst; sid:1;)\n"
        "alert http any any -> any any (http.response_body; to_sha256; dataset:isset,bad-files, type sha256, load bad.sha256; sid:2;)\n"
        "alert http any any -> any any (http.host; dataset:set,seen-hosts, type string, state hosts.lst; sid:3;)\n"
        "alert http any any -> any any (http.user_agent; dataset:isnotset,ua-bad; sid:4;)\n"
    )
    rs = RuleSet.load(paths=[rf])
    assert not rs.rejected, [str(e) for e in rs.rejected]
    assert run(rs, app_proto="http", buffers={"http.user_agent": b"BadBot/1.0"}) == [1]
    assert run(rs, app_proto="http", buffers={"http.user_agent": b"Firefox"}) == [4]
    body = {"app_proto": "http", "direction": "to_client"}
    assert run(rs, buffers={"http.response_body": b"malware body"}, **body) == [2]
    assert run(rs, buffers={"http.response_body": b"benign"}, **body) == []
    # set: matches when the value is new, then not again
    assert run(rs, app_proto="http", buffers={"http.host": b"a.example"}) == [3]
    assert run(rs, app_proto="http", buffers={"http.host": b"a.example"}) == []
    assert rs.datasets.snapshot("seen-hosts") == [base64.b64encode(b"a.example").decode()]
    # a load file that does not exist rejects the rule, naming the problem
    bad = RuleSet.from_text(
        "alert http any any -> any any (http.uri; dataset:isset,x, type string, load /nonexistent/x.lst; sid:9;)"
    )
    assert bad.stats.rejected == 1 and "cannot read load file" in bad.rejected[0].reason
    (tmp_path / "broken.lst").write_text("not base64 !!\n")
    bad2 = RuleSet.load(
        paths=[],
        texts=[
            f"alert http any any -> any any (http.uri; dataset:isset,y, type string, load {tmp_path}/broken.lst; sid:9;)"
        ],
    )
    assert "broken.lst:1" in bad2.rejected[0].reason


def test_actions_and_pass() -> None:
    rs = rules(
        'drop tcp any any -> any any (content:"x"; sid:1;)\n'
        'alert tcp any any -> any any (content:"x"; sid:2;)\n'
        'pass tcp 10.0.0.7 any -> any any (content:"x"; sid:3;)\n'
        'reject tcp any any -> any any (content:"x"; sid:4;)\n'
    )
    al = rs.match(ctx(pkt(b"x")))
    assert [(a.sid, a.action) for a in al] == [(1, "drop"), (4, "reject"), (2, "alert")]
    assert al[0].eve_alert()["action"] == "blocked" and al[2].eve_alert()["action"] == "allowed"
    # pass wins over everything after it, and comes back alone
    al = rs.match(ctx(pkt(b"x", src="10.0.0.7")))
    assert [(a.sid, a.action, a.silent) for a in al] == [(3, "pass", True)]


def test_noalert_drop_still_drops_silently() -> None:
    rs = rules(
        'drop tcp any any -> any any (content:"x"; noalert; sid:1;)\n'
        'alert tcp any any -> any any (content:"x"; noalert; sid:2;)\n'
    )
    assert [(a.sid, a.action, a.silent) for a in rs.match(ctx(pkt(b"x")))] == [(1, "drop", True)]


def test_eve_alert_fields() -> None:
    rs = rules(
        'alert tcp any any -> any any (msg:"M"; content:"x"; classtype:trojan-activity; metadata:former_category MALWARE; sid:9; rev:3;)'
    )
    (a,) = rs.match(ctx(pkt(b"x")))
    assert a.eve_alert() == {
        "action": "allowed", "gid": 1, "signature_id": 9, "rev": 3, "signature": "M",
        "category": "A Network Trojan was detected", "severity": 1,
        "metadata": {"former_category": ["MALWARE"]},
    }  # fmt: skip


def test_recursion_bounded() -> None:
    # many candidate positions for a chain that never completes: finishes, no match
    rs = rules(
        'alert tcp any any -> any any (content:"a"; content:"a"; distance:0; content:"a"; distance:0; content:"b"; distance:0; within:1; sid:1;)'
    )
    assert run(rs, b"a" * 3000) == []
    assert run(rs, b"aaab") == [1]
    assert sids([]) == []


def test_header_buffers_and_ipv6() -> None:
    rs = rules(
        'alert tcp any any -> any any (ipv4.hdr; content:"|06|"; offset:9; depth:1; sid:1;)\n'
        'alert tcp any any -> any any (tcp.hdr; content:"|02 04 05 b4|"; offset:20; sid:2;)\n'
        "alert ip [2001:db8::/32] any -> any any (sid:3;)\n"
    )
    ip4 = bytes([0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 10])
    tcp = bytes(20) + b"\x02\x04\x05\xb4"
    assert run(rs, ip_hdr=ip4, tcp_hdr=tcp) == [1, 2]
    assert run(rs, ip_hdr=ip4, tcp_hdr=bytes(20)) == [1]
    assert run(rs, src="2001:db8::1", dst="2001:db8::2") == [3]


def test_app_layer_protocol_and_stream_size() -> None:
    rs = rules(
        "alert tcp any any -> any any (app-layer-protocol:http; sid:1;)\n"
        "alert tcp any any -> any any (app-layer-protocol:!http; sid:2;)\n"
        "alert tcp any any -> any any (app-layer-protocol:failed; sid:3;)\n"
        "alert tcp any any -> any any (stream_size:client,>,100; sid:4;)\n"
        "alert tcp any any -> any any (stream_size:either,>=,5000; sid:5;)\n"
    )
    assert run(rs, app_proto="http") == [1]
    assert run(rs, app_proto="tls") == [2]
    assert run(rs, app_proto="failed") == [2, 3]
    assert run(rs, app_proto=None) == []  # unknown yet: neither http nor !http
    assert run(rs, stream_bytes_toserver=101) == [4]
    assert run(rs, stream_bytes_toserver=5, stream_bytes_toclient=6000) == [5]


def test_pcre_dialect_and_raw_bytes_in_rule_file(tmp_path: Path) -> None:
    f = tmp_path / "x.rules"
    # a Latin-1 byte in a content and in the msg: kept as the byte, msg stays valid text
    f.write_bytes(
        b'alert tcp any any -> any any (msg:"caf\xe9"; content:"caf\xe9"; sid:1;)\n'
        b'alert tcp any any -> any any (pcre:"/^(?<w>ab)\\k<w>\\e/"; sid:2;)\n'
        b'alert tcp any any -> any any (pcre:"/GET \\/\\x{41}\\z/"; sid:3;)\n'
    )
    rs = RuleSet.load(paths=[f])
    assert not rs.rejected, [str(e) for e in rs.rejected]
    assert run(rs, b"un caf\xe9") == [1]
    assert rs.match(ctx(pkt(b"caf\xe9")))[0].msg == "caf\ufffd"
    assert run(rs, b"abab\x1b") == [2]
    assert run(rs, b"GET /A") == [3] and run(rs, b"GET /A\n") == []


def test_ip_only_rules_checked_once_per_flow_direction() -> None:
    rs = rules(
        "alert ip any any -> 192.0.2.0/24 any (sid:1;)\n"
        "alert tcp any any -> 192.0.2.0/24 80 (sid:2;)\n"  # ports: not IP-only
        "alert ip any any <> 192.0.2.0/24 any (ttl:64; sid:3;)\n"  # a packet keyword: per packet
        "alert icmp any any -> any any (sid:4;)\n"
    )
    assert rs.rules[0].ip_only and not rs.rules[1].ip_only and not rs.rules[2].ip_only
    fs = FlowDetectState()
    assert run(rs, state=fs) == [1, 2, 3]
    assert run(rs, state=fs) == [2, 3]  # same direction again: IP-only rule already checked
    # the first packet of the other direction goes through the IP-only rules once
    back = dict(src="192.0.2.10", dst="10.0.0.1", sport=80, dport=40000, direction="to_client")
    assert run(rs, state=fs, **back) == [3]
    assert run(rs) == [1, 2, 3]  # without a flow every packet is checked
    icmp = dict(proto=1, icmp_type=8, sport=0, dport=0)
    fs2 = FlowDetectState()
    assert run(rs, b"\x00" * 8, fs2, **icmp) == [1, 3, 4]
    assert run(rs, b"\x00" * 8, fs2, **icmp) == [3]


def test_pcre_backtracking_is_bounded() -> None:
    # a rule that backtracks exponentially on hostile input: the search is cut off and counts
    # as no match (Suricata's pcre match-limit), the packet is not held forever
    rs = rules('alert tcp any any -> any any (content:"aa"; pcre:"/(a|aa)+b/"; sid:1;)\n'
               'alert tcp any any -> any any (content:"aa"; sid:2;)')  # fmt: skip
    assert run(rs, b"a" * 48) == [2]
    assert rs.pcre_timeouts == 1
    assert run(rs, b"aaab") == [1, 2]


def test_fragbits_fragoffset_ipopts() -> None:
    def hdr(flags_off: int, opts: bytes = b"") -> bytes:
        ihl = (20 + len(opts)) // 4
        return bytes([0x40 | ihl, 0, 0, 40, 0, 1]) + flags_off.to_bytes(2, "big") + bytes(12) + opts

    h = "alert ip any any -> any any"
    df, mf = hdr(0x4000), hdr(0x2000 | 0x0003)
    assert one("fragbits:D;", b"", header=h, ip_hdr=df) and not one(
        "fragbits:M;", b"", header=h, ip_hdr=df
    )
    assert one("fragbits:*MD;", b"", header=h, ip_hdr=mf)
    assert not one("fragbits:+D;", b"", header=h, ip_hdr=df)  # '+' wants another bit as well
    assert one("fragbits:+M;", b"", header=h, ip_hdr=hdr(0x6000))
    assert one("fragbits:!D;", b"", header=h, ip_hdr=mf)
    assert one("fragoffset:3;", b"", header=h, ip_hdr=mf) and one(
        "fragoffset:>2;", b"", header=h, ip_hdr=mf
    )
    assert one("fragoffset:!0;", b"", header=h, ip_hdr=mf) and not one(
        "fragoffset:0;", b"", header=h, ip_hdr=mf
    )
    rr = hdr(0, bytes([7, 7, 4, 0, 0, 0, 0, 0]))
    assert one("ipopts:rr;", b"", header=h, ip_hdr=rr) and one(
        "ipopts:any;", b"", header=h, ip_hdr=rr
    )
    assert not one("ipopts:lsrr;", b"", header=h, ip_hdr=rr) and not one(
        "ipopts:any;", b"", header=h, ip_hdr=df
    )
    bad = RuleSet.from_text("alert ip any any -> any any (fragbits:Q; sid:1;)")
    assert bad.rejected[0].keyword == "fragbits"


@pytest.mark.parametrize(
    ("expr", "size", "hit"),
    [
        ("19", 19, True), ("=0x13", 19, True), ("!0x14", 19, True), ("!=19", 19, False),
        (">21", 22, True), (">=21", 21, True), ("<22", 22, False), ("<=22", 22, True),
        ("19-22", 19, False), ("19-22", 20, True), ("19-22", 22, False),
        ("!19-22", 19, True), ("!19-22", 21, False), ("&0x10=0x10", 17, True),
        ("&0x10!=0", 15, False),
    ],
)  # fmt: skip
def test_integer_keyword_modes(expr: str, size: int, hit: bool) -> None:
    # bsize follows Suricata's integer-keywords: exclusive ranges, negated ranges, bitmasks
    rs = rules(f"alert http any any -> any any (http.uri; bsize:{expr}; sid:1;)")
    assert (run(rs, app_proto="http", buffers={"http.uri": b"u" * size}) == [1]) is hit


def test_pcre_options_e_g_and_capture_names() -> None:
    rs = rules(
        'alert tcp any any -> any any (pcre:"/ab$/"; sid:1;)\n'
        'alert tcp any any -> any any (pcre:"/ab$/E"; sid:2;)\n'
        # G: lazy by default, so the relative content right after one "x" is found
        'alert tcp any any -> any any (pcre:"/a.+x/G"; content:"x1"; distance:-1; within:2; sid:3;)\n'
        'alert tcp any any -> any any (pcre:"/([a-z]+)\\/[a-z]+/U, flow:ua/repo,alert:ua/pkg"; sid:4;)\n'
    )
    assert run(rs, b"ab\n") == [1]  # PCRE: $ also before a final newline; E turns that off
    assert run(rs, b"ab") == [1, 2]
    assert run(rs, b"a-x1-x2") == [3]
    assert run(rs, app_proto="http", buffers={"http.uri": b"fr/curl"}) == [4]


def test_base64_decode_and_data() -> None:
    rs = rules(
        'alert http any any -> any any (http.uri; content:"/q"; base64_decode:bytes 8, offset 1, relative; '
        'base64_data; content:"test"; sid:1;)\n'
        'alert tcp any any -> any any (content:"auth "; base64_decode:relative; base64_data; content:"admin:"; startswith; sid:2;)\n'
    )
    assert run(rs, app_proto="http", buffers={"http.uri": b"/q?" + base64.b64encode(b"test!")}) == [
        1
    ]
    assert (
        run(rs, app_proto="http", buffers={"http.uri": b"/q?" + base64.b64encode(b"nope!")}) == []
    )
    # decoding stops at the first byte outside the alphabet
    assert run(rs, b"auth " + base64.b64encode(b"admin:pw") + b"\r\n") == [2]
    assert run(rs, b"auth !" + base64.b64encode(b"admin:pw")) == []
    bad = RuleSet.from_text('alert tcp any any -> any any (base64_data; content:"x"; sid:3;)')
    assert bad.rejected[0].keyword == "base64_data"


def test_decode_event_rules() -> None:
    rs = rules(
        'alert pkthdr any any -> any any (msg:"SURICATA IPv4 truncated packet"; decode-event:ipv4.trunc_pkt; sid:2200004;)\n'
        'alert pkthdr any any -> any any (msg:"SURICATA TCP option invalid length"; decode-event:tcp.invalid_optlen; sid:2200005;)\n'
    )
    assert run(rs, anomalies=["decoder.ipv4.trunc_pkt"]) == [2200004]
    assert run(rs, anomalies=[]) == []
    bad = RuleSet.from_text("alert pkthdr any any -> any any (decode-event:bad name; sid:1;)")
    assert bad.rejected[0].keyword == "decode-event"


def test_hostbits_and_xbits_across_flows_with_expiry() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"scan"; hostbits:set,scanner,src,60; noalert; sid:1;)\n'
        'alert tcp any any -> any any (content:"login"; hostbits:isset,scanner,src; sid:2;)\n'
        'alert tcp any any -> any any (content:"hello"; xbits:set,seen,track ip_pair,expire 10; noalert; sid:3;)\n'
        'alert tcp any any -> any any (content:"bye"; xbits:isset,seen,track ip_pair; sid:4;)\n'
        'alert tcp any any -> any any (content:"bye"; xbits:isnotset,seen,track ip_pair; sid:5;)\n'
    )
    assert run(rs, b"login", ts=0) == []
    assert run(rs, b"scan", ts=1) == []
    # another flow (no flow state), same source host: the host bit is there until it expires
    assert run(rs, b"login", ts=30) == [2]
    assert run(rs, b"login", ts=30, src="10.0.0.99") == []
    assert run(rs, b"login", ts=62) == []
    assert run(rs, b"hello", ts=100) == []
    # the pair bit works in the reverse direction too, and expires
    assert run(rs, b"bye", ts=105, src="192.0.2.10", dst="10.0.0.1") == [4]
    assert run(rs, b"bye", ts=111) == [5]
    bad = RuleSet.from_text("alert tcp any any -> any any (xbits:set,a,track tx; sid:9;)")
    assert bad.rejected[0].keyword == "xbits"


def test_threshold_config_suppress_override_and_rate_filter(tmp_path: Path) -> None:
    tc = tmp_path / "threshold.config"
    tc.write_text(
        "# global thresholds\n"
        "suppress gen_id 1, sig_id 1, track by_src, ip [10.9.0.0/16, 10.8.0.1]\n"
        "suppress gen_id 1, sig_id 2\n"
        "threshold gen_id 1, sig_id 3, type limit, track by_src, count 1, seconds 60\n"
        "rate_filter gen_id 1, sig_id 4, track by_src, count 2, seconds 60, \\\n"
        "    new_action drop, timeout 30\n"
        "suppress gen_id 1, sig_id 5, track by_sideways, ip 1.2.3.4\n"
        "threshold gen_id 0, sig_id 0, type limit, track by_src, count 1, seconds 60\n"
    )
    rs = RuleSet.load(
        texts=[
            'alert tcp any any -> any any (content:"a"; sid:1;)\n'
            'alert tcp any any -> any any (content:"b"; flowbits:set,seen_b; sid:2;)\n'
            'alert tcp any any -> any any (content:"c"; threshold:type threshold, track by_src, count 5, seconds 60; sid:3;)\n'
            'alert tcp any any -> any any (content:"d"; sid:4;)\n'
        ],
        threshold_config=tc,
    )
    errs = sorted((e.line, e.reason) for e in rs.rejected)
    assert [ln for ln, _ in errs] == [7, 8] and rs.stats.loaded == 4
    assert run(rs, b"a", src="10.9.1.1") == [] and run(rs, b"a", src="10.8.0.1") == []
    assert run(rs, b"a", src="10.7.0.1") == [1]
    fs = FlowDetectState()
    assert run(rs, b"b", fs) == [] and fs.has_bit("seen_b")  # suppressed, flowbit still set
    assert [run(rs, b"c", ts=t) for t in (0, 1, 2)] == [[3], [], []]  # limit 1 replaces threshold 5
    acts = [[a.action for a in rs.match(ctx(pkt(b"d", ts=t)))] for t in (0, 1, 2, 3, 40)]
    assert acts == [["alert"], ["alert"], ["drop"], ["drop"], ["alert"]]


def test_ports_on_protocols_without_ports_and_frag_flow_options() -> None:
    rs = rules(
        "alert ip any any -> any !80 (sid:1;)\n"
        "alert ip any any -> any any (ttl:64; sid:2;)\n"
        "alert ip any any -> any any (flow:only_frag; sid:3;)\n"
        "alert ip any any -> any any (flow:no_frag; sid:4;)\n"
    )
    icmp = dict(proto=1, icmp_type=8, sport=0, dport=0)
    assert run(rs, b"\x00" * 8, **icmp) == [2, 4]  # a port rule never matches ICMP
    assert run(rs, b"", dport=81) == [1, 2, 4]
    assert run(rs, b"", dport=81, reassembled=True) == [1, 2, 3]


def test_flow_counters() -> None:
    rs = rules(
        "alert tcp any any -> any any (flow.pkts:toclient,>=3; sid:1;)\n"
        "alert tcp any any -> any any (flow.bytes:either,>1000; sid:2;)\n"
        "alert tcp any any -> any any (flow.age:>3600; sid:3;)\n"
        "alert tcp any any -> any any (flow.pkts_toserver:2; sid:4;)\n"
    )
    c = dict(flow_pkts_toserver=2, flow_pkts_toclient=3, flow_bytes_toserver=10,
             flow_bytes_toclient=2000, flow_start=0.0)  # fmt: skip
    assert run(rs, ts=4000.0, **c) == [1, 2, 3, 4]
    assert run(rs, ts=10.0, **{**c, "flow_pkts_toclient": 1, "flow_bytes_toclient": 5}) == [4]
    assert run(rs, ts=4000.0) == []  # counters not provided: these keywords do not match


def test_app_layer_rule_direction_follows_its_buffers() -> None:
    rs = rules(
        'alert http any any -> any any (http.uri; content:"/x"; sid:1;)\n'
        'alert http any any -> any any (http.stat_code; content:"200"; sid:2;)\n'
        'alert http any any -> any any (http.header; content:"Server"; sid:3;)\n'
    )
    tx = {"http.uri": b"/x", "http.stat_code": b"200", "http.header": b"Server: x\r\n"}
    fs = FlowDetectState()
    # the same transaction seen in both directions: the URI rule on the request side, the
    # status rule on the response side, the two-sided header rule once
    assert run(rs, b"", fs, app_proto="http", buffers=tx, tx_id=0, direction="to_server") == [1, 3]
    assert run(rs, b"", fs, app_proto="http", buffers=tx, tx_id=0, direction="to_client") == [2]


def test_stream_and_app_layer_event_rules() -> None:
    rs = rules(
        'alert tcp any any -> any any (msg:"SURICATA STREAM retransmission"; stream-event:pkt_retransmission; sid:2210000;)\n'
        'alert http any any -> any any (msg:"SURICATA HTTP field too long"; flow:established; app-layer-event:http.request_field_too_long; sid:2221000;)\n'
    )
    assert run(rs, events=["stream.pkt_retransmission"]) == [2210000]
    assert run(rs, app_proto="http", events=["http.request_field_too_long"]) == [2221000]
    assert run(rs, app_proto="http", events=[]) == []


def test_request_header_is_one_buffer_per_line() -> None:
    rs = rules(
        'alert http any any -> any any (http.request_header; content:"X-Id|3a| 7"; endswith; sid:1;)\n'
        'alert http any any -> any any (http.request_header; content:"Host|3a|"; startswith; content:"Accept"; distance:0; sid:2;)\n'
    )
    block = b"Host: a.example\r\nX-Id: 7\r\nAccept: */*\r\n"
    # endswith applies to each header line; a relative match cannot run into the next line
    assert run(rs, app_proto="http", buffers={"http.request_header": block}) == [1]
    assert run(rs, app_proto="http", buffers={"http.request_header": [b"Host: a", b"X-Id: 7"]}) == [
        1
    ]


def test_a_failing_rule_does_not_stop_detection() -> None:
    rs = rules(
        'alert tcp any any -> any any (content:"x"; sid:1;)\n'
        'alert tcp any any -> any any (content:"x"; sid:2;)\n'
    )

    def boom(_env: object) -> bool:
        raise RuntimeError("broken check")

    next(r for r in rs.rules if r.sid == 1).checks.append(boom)
    assert run(rs, b"x") == [2]
    assert rs.errors == 1 and "sid 1" in rs.warnings[0]
