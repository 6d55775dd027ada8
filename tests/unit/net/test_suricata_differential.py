"""Differential conformance: the same generated capture and rules through `vmshield nids` and
real Suricata 7, and the alerts compared (signature, addresses and ports, with multiplicity).

Suricata is a test dependency (`make bootstrap` installs it); without it this test fails rather
than skips, so that CI cannot pass without the comparison. Nothing is sent on a network: the
traffic is written to a pcap file and read back by both tools.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from nids_capgen import TcpConv, client_hello, server_hello, udp_frame
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from vmshield.engines.net.rules import RuleSet

# HOME_NET is 10.0.0.0/8 for both tools, so that 192.168.x plays the outside world and the
# $EXTERNAL_NET rules have something to match.
HOME_NET = "10.0.0.0/8"
CLIENT = "10.1.0.10"
WEB = "10.1.0.20"
DNS_SERVER = "10.1.0.53"
TLS_SERVER = "192.168.7.30"  # outside HOME_NET
RAW_SERVER = "10.1.0.40"
UDP_SERVER = "10.1.0.41"
PING_TARGET = "10.1.0.42"
LOOP_HOST = "10.1.0.77"
V6_CLIENT = "fd00::10"
V6_SERVER = "fd00::20"

# The TLS ClientHello of the capture and its JA3 (github.com/salesforce/ja3), computed here from
# the fields the hello is built from.
TLS_CIPHERS = [0x1301, 0xC02F, 0x009C]
TLS_GROUPS = [29, 23]
TLS_POINT_FORMATS = [0]
TLS_EXT_ORDER = [0, 10, 11, 13, 16]
JA3_HASH = hashlib.md5(
    "771,{},{},{},{}".format(
        "-".join(map(str, TLS_CIPHERS)),
        "-".join(map(str, TLS_EXT_ORDER)),
        "-".join(map(str, TLS_GROUPS)),
        "-".join(map(str, TLS_POINT_FORMATS)),
    ).encode(),
    usedforsecurity=False,
).hexdigest()

# JA3S of the ServerHello: version, cipher, extensions (renegotiation_info).
JA3S_HASH = hashlib.md5(b"771,49199,65281", usedforsecurity=False).hexdigest()

HTTP_REQUEST = (
    b"GET /admin/login.php?user=root&id=5 HTTP/1.1\r\n"
    b"Host: www.Example.net\r\n"
    b"User-Agent: EvilBot/1.0 (scanner)\r\n"
    b"Accept: */*\r\n"
    b"X-Debug: enabled\r\n"
    b"\r\n"
)
HTTP_BODY = b"<html><body>welcome admin panel</body></html>"
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.18\r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Length: " + str(len(HTTP_BODY)).encode() + b"\r\n"
    b"\r\n" + HTTP_BODY
)
POST_BODY = b"name=test&pw=1234"
POST_REQUEST = (
    b"POST /upload HTTP/1.1\r\n"
    b"Host: files.example.net\r\n"
    b"User-Agent: curl/7.88.1\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: " + str(len(POST_BODY)).encode() + b"\r\n"
    b"\r\n" + POST_BODY
)
CHUNKED_RESPONSE = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"6\r\nhello \r\n7\r\nchunked\r\n0\r\n\r\n"
)
# A binary protocol: magic, a 2-byte length, that many bytes, a 4-byte value, a trailer.
RAW_PAYLOAD = b"HDR\x00\x06ABCDEF\x00\x00\x00\x2aTAIL"

# Where real Suricata and vmshield disagree and the fix is not small: sid -> why. These sids
# are left out of the equality; the test checks they still differ, and only in how many times
# the same alert is raised.
KNOWN_DIFFERENCES: dict[int, str] = {
    1080: "content depth/offset on TCP: Suricata also inspects each packet's payload "
    "(SIG_TYPE_PKT_STREAM), so in IDS mode it alerts on the segment and again on the "
    "ACKed stream; vmshield inspects the stream only, once",
    1081: "as 1080 (content offset/depth)",
    1092: "as 1080 (startswith is a depth)",
    1054: "a TCP payload pattern again in a later chunk of the same direction (the second "
    "request's Host:): Suricata alerts for each inspected chunk, vmshield reports a stream "
    "signature once per 4 KiB of a direction (docs/network-engine.md)",
}
# Rules that match but are not meant to alert (flowbits:noalert).
NOALERT = {1040}
EXPECTED_OURS = 75
EXPECTED_SURICATA = EXPECTED_OURS + len(KNOWN_DIFFERENCES)  # one more alert each

RULES = f"""
# --- HTTP request buffers ---
alert http $HOME_NET any -> $HTTP_SERVERS $HTTP_PORTS (msg:"uri starts /admin/"; flow:established,to_server; http.uri; content:"/admin/"; startswith; sid:1001;)
alert http any any -> any any (msg:"uri .php within 12 of /admin"; http.uri; content:"/admin"; content:".php"; distance:0; within:12; sid:1002;)
alert http any any -> any any (msg:"NEAR MISS uri .php within 5"; http.uri; content:"/admin"; content:".php"; distance:0; within:5; sid:1003;)
alert http any any -> any any (msg:"uri ends id=5"; http.uri; content:"id=5"; endswith; sid:1004;)
alert http any any -> any any (msg:"method GET bsize 3"; http.method; content:"GET"; bsize:3; sid:1005;)
alert http any any -> any any (msg:"POST upload with body"; http.method; content:"POST"; http.uri; content:"/upload"; http.request_body; content:"pw=1234"; endswith; sid:1006;)
alert http any any -> any any (msg:"host normalised"; http.host; content:"www.example.net"; sid:1007;)
alert http any any -> any any (msg:"raw host keeps case"; http.host.raw; content:"Example"; sid:1008;)
alert http any any -> any any (msg:"NEAR MISS raw host lowercase"; http.host.raw; content:"www.example.net"; sid:1009;)
alert http any any -> any any (msg:"user agent nocase startswith"; http.user_agent; content:"evilbot"; nocase; startswith; sid:1010;)
alert http any any -> any any (msg:"NEAR MISS user agent case"; http.user_agent; content:"evilbot"; sid:1011;)
alert http any any -> any any (msg:"header X-Debug"; http.header; content:"X-Debug|3a 20|enabled|0d 0a|"; sid:1012;)
alert http any any -> any any (msg:"GET without X-Forwarded-For"; http.method; content:"GET"; http.header; content:!"X-Forwarded-For"; sid:1013;)
alert http any any -> any any (msg:"GET without Accept (the kept-alive request)"; http.method; content:"GET"; http.header; content:!"Accept|3a|"; sid:1014;)
alert http any any -> any any (msg:"urilen over 20"; urilen:>20; sid:1015;)
alert http any any -> any any (msg:"NEAR MISS urilen under 5"; urilen:<5; sid:1016;)
alert http any any -> any any (msg:"pcre U"; pcre:"/\\/admin\\/[a-z]+\\.php/U"; sid:1017;)
alert http any any -> any any (msg:"pcre V i"; pcre:"/^evilbot\\/\\d\\.\\d/Vi"; sid:1018;)
alert http any any -> any any (msg:"NEAR MISS pcre V without i"; pcre:"/^evilbot/V"; sid:1019;)
alert http any any -> any any (msg:"legacy http_uri modifier"; content:"user=root"; http_uri; sid:1020;)
alert http any any -> any !$HTTP_PORTS (msg:"NEAR MISS not HTTP_PORTS"; http.method; content:"GET"; sid:1021;)
# --- HTTP response buffers ---
alert http any any -> any any (msg:"status 200"; flow:established,to_client; http.stat_code; content:"200"; sid:1030;)
alert http any any -> any any (msg:"NEAR MISS status 200 in a request"; http.stat_code; content:"200"; http.header; content:"X-Debug"; sid:1031;)
alert http any any -> any any (msg:"body welcome admin"; file.data; content:"welcome admin"; sid:1032;)
alert http any any -> any any (msg:"response body ends html"; http.response_body; content:"</html>"; endswith; sid:1033;)
alert http any any -> any any (msg:"404 chunked body dechunked"; http.stat_code; content:"404"; file.data; content:"hello chunked"; sid:1034;)
alert http any any -> any any (msg:"NEAR MISS chunk size line in body"; file.data; content:"6|0d 0a|hello"; sid:1035;)
alert http any any -> any any (msg:"server header"; http.server; content:"nginx"; sid:1036;)
# --- flowbits ---
alert http any any -> any any (msg:"set admin.seen"; http.uri; content:"/admin/"; flowbits:set,admin.seen; flowbits:noalert; sid:1040;)
alert http any any -> any any (msg:"200 after admin"; flow:to_client; http.stat_code; content:"200"; flowbits:isset,admin.seen; sid:1041;)
alert http any any -> any any (msg:"NEAR MISS bit never set"; flow:to_client; http.stat_code; content:"200"; flowbits:isset,never.set; sid:1042;)
# --- TCP stream content (split across segments, out of order, retransmitted) ---
alert tcp any any -> any 80 (msg:"stream UA split"; flow:established,to_server; content:"User-Agent|3a| EvilBot"; sid:1050;)
alert tcp any any -> any 80 (msg:"app-layer-protocol http"; flow:to_server; app-layer-protocol:http; content:"X-Debug|3a|"; sid:1051;)
alert tcp any any -> any 80 (msg:"stream Host in each request"; flow:established,to_server; content:"Host|3a|"; sid:1054;)
alert tcp any 80 -> any any (msg:"stream response to client"; flow:established,to_client; content:"nginx/1.18"; sid:1053;)
alert tcp any any -> any 80 (msg:"NEAR MISS app-layer-protocol tls"; app-layer-protocol:tls; content:"Host|3a|"; sid:1052;)
# --- DNS ---
alert dns any any -> any any (msg:"dns query malware-test"; dns.query; content:"malware-test"; sid:1060;)
alert dns any any -> any any (msg:"dns query exact"; dns.query; content:"www.malware-test.example"; startswith; endswith; bsize:24; sid:1061;)
alert dns any any -> any any (msg:"dns over tcp query"; dns.query; content:"dns-test.example"; endswith; sid:1062;)
alert dns any any -> any any (msg:"NEAR MISS dns query case"; dns.query; content:"MALWARE"; sid:1063;)
alert dns any any -> any any (msg:"dns pcre"; dns.query; pcre:"/^www\\.[a-z-]+\\.example$/"; sid:1064;)
alert udp $HOME_NET any -> any 53 (msg:"udp dns label hex"; content:"|07|example|00|"; sid:1065;)
alert udp $HOME_NET any -> !$HOME_NET 53 (msg:"NEAR MISS dns to external"; content:"|07|example|00|"; sid:1066;)
# --- TLS ---
alert tls $HOME_NET any -> $EXTERNAL_NET 443 (msg:"sni exact"; tls.sni; content:"secure.example.com"; bsize:18; sid:1070;)
alert tls any any -> any any (msg:"sni endswith nocase"; tls.sni; content:".EXAMPLE.COM"; nocase; endswith; sid:1071;)
alert tls any any -> any any (msg:"NEAR MISS sni"; tls.sni; content:"insecure"; sid:1072;)
alert tls any any -> any any (msg:"ja3 hash"; ja3.hash; content:"{JA3_HASH}"; sid:1073;)
alert tls any any -> any any (msg:"ja3 hash in upper case"; ja3.hash; content:"{JA3_HASH.upper()}"; sid:1077;)
alert tls any any -> any any (msg:"ja3s hash of the server hello"; ja3s.hash; content:"{JA3S_HASH}"; sid:1078;)
alert tls any any -> any any (msg:"NEAR MISS ja3 hash"; ja3.hash; content:"00000000000000000000000000000000"; sid:1074;)
alert tcp any any -> any [443,8443] (msg:"tls record to server"; flow:established,to_server; app-layer-protocol:tls; content:"|16 03 01|"; depth:3; sid:1075;)
alert tls $EXTERNAL_NET any -> $HOME_NET any (msg:"NEAR MISS tls from home"; tls.sni; content:"secure"; sid:1076;)
# --- plain TCP payload: offsets, byte_*, isdataat ---
alert tcp $HOME_NET any -> $HOME_NET 9999 (msg:"raw magic depth 3"; content:"HDR"; offset:0; depth:3; sid:1080;)
alert tcp any any -> any 9999 (msg:"raw ABCDEF offset 5 depth 6"; content:"ABCDEF"; offset:5; depth:6; sid:1081;)
alert tcp any any -> any 9999 (msg:"NEAR MISS raw ABCDEF offset 6"; content:"ABCDEF"; offset:6; sid:1082;)
alert tcp any any -> any 9999 (msg:"byte_test length"; content:"HDR"; byte_test:2,=,6,0,relative; sid:1083;)
alert tcp any any -> any 9999 (msg:"byte_jump over data"; content:"HDR"; byte_jump:2,0,relative; content:"|00 00 00 2a|"; within:4; sid:1084;)
alert tcp any any -> any 9999 (msg:"byte_extract length"; content:"HDR"; byte_extract:2,0,len,relative; content:"ABCDEF"; distance:0; within:len; sid:1085;)
alert tcp any any -> any 9999 (msg:"byte_test greater"; content:"HDR"; byte_test:4,>,40,11; sid:1086;)
alert tcp any any -> any 9999 (msg:"NEAR MISS byte_test greater"; content:"HDR"; byte_test:4,>,42,11; sid:1087;)
alert tcp any any -> any 9999 (msg:"isdataat 3 after 2a"; content:"|2a|"; isdataat:3,relative; sid:1088;)
alert tcp any any -> any 9999 (msg:"NEAR MISS isdataat 5 after 2a"; content:"|2a|"; isdataat:5,relative; sid:1089;)
alert tcp any any -> any 9999 (msg:"pcre s i"; pcre:"/abcdef.{{4}}tail$/si"; sid:1090;)
alert tcp any any -> any 9999 (msg:"pcre x"; pcre:"/ A B C D E F \\x00 /x"; sid:1100;)
alert tcp any any -> any 9999 (msg:"pcre R"; content:"HDR"; pcre:"/^\\x00\\x06/R"; sid:1091;)
alert tcp any any -> any 9999 (msg:"nocase startswith"; content:"hdr"; nocase; startswith; sid:1092;)
alert tcp any any -> any 9999 (msg:"dsize 19"; dsize:19; sid:1093;)
alert tcp any any -> any 9999 (msg:"NEAR MISS dsize over 100"; dsize:>100; sid:1094;)
alert tcp any any -> any 9999 (msg:"syn"; flags:S; sid:1095;)
alert tcp any any <> any 9999 (msg:"fin ack both ways"; flags:FA; sid:1096;)
alert tcp any any -> any 9999 (msg:"NEAR MISS to_client"; flow:to_client; content:"HDR"; sid:1097;)
alert tcp any any -> any [1024:] (msg:"port range"; content:"TAIL"; endswith; sid:1098;)
alert tcp any any -> any ![1024:] (msg:"NEAR MISS negated port range"; content:"TAIL"; sid:1099;)
# --- UDP, thresholds ---
alert udp any any -> any 5001 (msg:"udp limit 1"; content:"PING"; threshold:type limit, track by_src, count 1, seconds 60; sid:1110;)
alert udp any any -> any 5001 (msg:"udp every 2nd"; content:"PING"; threshold:type threshold, track by_src, count 2, seconds 60; sid:1111;)
alert udp any any -> any 5001 (msg:"udp after 3"; content:"PING"; detection_filter:track by_dst, count 3, seconds 60; sid:1112;)
alert udp any any -> any 5001 (msg:"udp both"; content:"PING"; threshold:type both, track by_src, count 3, seconds 60; sid:1113;)
alert udp any any -> any 5001 (msg:"udp established"; flow:established; content:"PING"; sid:1114;)
alert udp any any -> any any (msg:"sameip"; sameip; sid:1115;)
# --- ICMP and IP ---
alert icmp any any -> any any (msg:"echo request"; itype:8; icode:0; sid:1120;)
alert icmp any any -> any any (msg:"echo reply ttl 128"; itype:0; ttl:128; sid:1121;)
alert icmp any any -> any any (msg:"NEAR MISS unreachable"; itype:3; sid:1122;)
alert icmp any any -> any any (msg:"icmp payload"; content:"abcd"; sid:1123;)
alert ip any any -> any any (msg:"ip_proto icmp"; ip_proto:1; sid:1124;)
alert ip any any -> any any (msg:"NEAR MISS ip_proto gre"; ip_proto:47; sid:1125;)
# --- IPv6 ---
alert udp fd00::/8 any -> any 6001 (msg:"ipv6 udp payload"; content:"ipv6-hello"; sid:1130;)
alert ip [{V6_CLIENT}] any -> any any (msg:"ipv6 ip-only"; sid:1131;)
alert udp any any -> ![fd00::/8,10.0.0.0/8] any (msg:"NEAR MISS negated v6 list"; content:"ipv6-hello"; sid:1132;)
"""


def _tcp_raw(conv: TcpConv, frame: bytes) -> None:
    """Append an already built frame of `conv` (out-of-order tests choose the order)."""
    conv.ts += 0.001
    conv.frames.append((conv.ts, frame))


def _ack(conv: TcpConv, toserver: bool) -> None:
    conv.send(b"", toserver=toserver, flags="A")


def _capture() -> list[tuple[float, bytes]]:
    t0 = 1_700_000_000.0
    frames: list[tuple[float, bytes]] = []

    # HTTP whose request arrives in 24-byte segments: the third before the second, and the
    # second again (a retransmission) after it.
    c = TcpConv(client=CLIENT, server=WEB, cport=40001, sport=80, ts=t0)
    c.handshake()
    segs = c.segments(HTTP_REQUEST, 24)
    for s in [segs[0], segs[2], segs[1], segs[1], *segs[3:]]:
        _tcp_raw(c, s)
    _ack(c, toserver=False)
    c.send(HTTP_RESPONSE, toserver=False)
    _ack(c, toserver=True)
    c.fin()
    frames += c.frames

    # HTTP POST with a body, answered with a chunked 404, then a GET on the same connection.
    c = TcpConv(client=CLIENT, server=WEB, cport=40002, sport=80, ts=t0 + 1)
    c.handshake()
    c.send(POST_REQUEST)
    _ack(c, toserver=False)
    c.send(CHUNKED_RESPONSE, toserver=False)
    _ack(c, toserver=True)
    # A second transaction on the kept-alive connection: app-layer rules alert once per request.
    c.send(b"GET /status HTTP/1.1\r\nHost: files.example.net\r\nUser-Agent: curl/7.88.1\r\n\r\n")
    _ack(c, toserver=False)
    c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", toserver=False)
    _ack(c, toserver=True)
    c.fin()
    frames += c.frames

    # DNS over UDP: a query and its answer.
    qname = b"\x03www\x0cmalware-test\x07example\x00"
    query = bytes.fromhex("1234 0100 0001 0000 0000 0000") + qname + b"\x00\x01\x00\x01"
    answer = (
        bytes.fromhex("1234 8180 0001 0001 0000 0000")
        + qname
        + b"\x00\x01\x00\x01"
        + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04"
        + bytes([10, 9, 9, 9])
    )
    frames.append((t0 + 2, udp_frame(CLIENT, DNS_SERVER, 33333, 53, query)))
    frames.append((t0 + 2.001, udp_frame(DNS_SERVER, CLIENT, 53, 33333, answer)))

    # DNS over TCP (2-byte length prefix), a TXT query.
    tname = b"\x03tcp\x08dns-test\x07example\x00"
    tq = bytes.fromhex("4321 0100 0001 0000 0000 0000") + tname + b"\x00\x10\x00\x01"
    ta = bytes.fromhex("4321 8180 0001 0000 0000 0000") + tname + b"\x00\x10\x00\x01"
    c = TcpConv(client=CLIENT, server=DNS_SERVER, cport=40003, sport=53, ts=t0 + 3)
    c.handshake()
    c.send(struct.pack("!H", len(tq)) + tq)
    c.send(struct.pack("!H", len(ta)) + ta, toserver=False)
    _ack(c, toserver=True)
    c.fin()
    frames += c.frames

    # TLS to a server outside HOME_NET: ClientHello with SNI, ServerHello.
    c = TcpConv(client=CLIENT, server=TLS_SERVER, cport=40004, sport=443, ts=t0 + 4)
    c.handshake()
    c.send(
        client_hello(
            "secure.example.com",
            ciphers=TLS_CIPHERS,
            groups=TLS_GROUPS,
            point_formats=TLS_POINT_FORMATS,
            sig_algs=[0x0403, 0x0804],
            alpn=[b"http/1.1"],
            ext_order=TLS_EXT_ORDER,
        )
    )
    c.send(server_hello(0xC02F, [(0xFF01, b"\x00")]), toserver=False)
    _ack(c, toserver=True)
    c.fin()
    frames += c.frames

    # A binary protocol over TCP.
    c = TcpConv(client=CLIENT, server=RAW_SERVER, cport=40005, sport=9999, ts=t0 + 5)
    c.handshake()
    c.send(RAW_PAYLOAD)
    _ack(c, toserver=False)
    c.fin()
    frames += c.frames

    # UDP: five datagrams (thresholds) and one answer (flow established afterwards).
    for i in range(5):
        ts = t0 + 6 + i * 0.01
        frames.append((ts, udp_frame(CLIENT, UDP_SERVER, 5000, 5001, b"PING-%d" % i)))
        if i == 1:
            frames.append((ts + 0.001, udp_frame(UDP_SERVER, CLIENT, 5001, 5000, b"PONG")))
    # A datagram from a host to itself.
    frames.append((t0 + 7, udp_frame(LOOP_HOST, LOOP_HOST, 7777, 7778, b"loop")))

    # ICMP echo request and reply.
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    req = eth / IP(src=CLIENT, dst=PING_TARGET, ttl=64) / ICMP(type=8, id=7, seq=1) / Raw(b"abcd")
    rep = eth / IP(src=PING_TARGET, dst=CLIENT, ttl=128) / ICMP(type=0, id=7, seq=1) / Raw(b"abcd")
    frames.append((t0 + 8, bytes(req)))
    frames.append((t0 + 8.001, bytes(rep)))

    # IPv6 UDP: two datagrams and an answer.
    for i, (src, dst, sp, dp, data) in enumerate(
        [
            (V6_CLIENT, V6_SERVER, 6000, 6001, b"ipv6-hello"),
            (V6_CLIENT, V6_SERVER, 6000, 6001, b"ipv6-hello again"),
            (V6_SERVER, V6_CLIENT, 6001, 6000, b"ipv6-reply"),
        ]
    ):
        p = eth / IPv6(src=src, dst=dst) / UDP(sport=sp, dport=dp) / Raw(data)
        frames.append((t0 + 9 + i * 0.001, bytes(p)))

    frames.sort(key=lambda f: f[0])
    return frames


def _write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> None:
    pkts = []
    for ts, f in frames:
        p = Ether(f)
        p.time = ts
        pkts.append(p)
    wrpcap(str(path), pkts)


# (signature_id, src_ip, src_port, dest_ip, dest_port); ICMP alerts have port 0.
Alert = tuple[int, str, int, str, int]


def _alerts(eve: Path) -> Counter[Alert]:
    out: Counter[Alert] = Counter()
    for line in eve.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event_type") != "alert":
            continue
        # Suricata writes IPv6 addresses in full ("fd00:0000:…:0010"), we write them
        # compressed: compare the addresses, not their spelling.
        out[
            (
                ev["alert"]["signature_id"],
                ipaddress.ip_address(ev["src_ip"]).compressed,
                ev.get("src_port", 0),
                ipaddress.ip_address(ev["dest_ip"]).compressed,
                ev.get("dest_port", 0),
            )
        ] += 1
    return out


def _run_suricata(exe: str, cap: Path, rules: Path, logdir: Path) -> tuple[Counter[Alert], str]:
    logdir.mkdir()
    cmd = [exe, "-r", str(cap), "-S", str(rules), "-k", "none", "--runmode", "single"]
    cmd += ["-l", str(logdir), "--set", f"vars.address-groups.HOME_NET=[{HOME_NET}]"]
    # No command socket: a second Suricata on the machine (CI, benchmarks) must not collide.
    cmd += ["--set", "unix-command.enabled=no"]
    # Suricata keeps 15 alerts per packet by default and drops the rest; vmshield keeps 64
    # (outputs.max-events-per-packet). The HTTP request packet raises more than 15 here.
    cmd += ["--set", "packet-alert-max=64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    log = (logdir / "suricata.log").read_text() if (logdir / "suricata.log").exists() else ""
    assert proc.returncode == 0, f"suricata failed:\n{proc.stdout}\n{proc.stderr}\n{log}"
    # A full alert queue would drop alerts silently and make the comparison wrong.
    overflow = re.search(r"detect\.alert_queue_overflow\s*\|\s*Total\s*\|\s*(\d+)",
                         (logdir / "stats.log").read_text())  # fmt: skip
    assert overflow is None or overflow.group(1) == "0", "Suricata's alert queue overflowed"
    return _alerts(logdir / "eve.json"), log


def _run_ours(cap: Path, rules: Path, eve: Path) -> tuple[Counter[Alert], str]:
    cmd = [sys.executable, "-m", "vmshield", "nids", "--pcap", str(cap), "--rules", str(rules)]
    cmd += ["--eve", str(eve), "--home-net", HOME_NET, "--mode", "ids", "--no-attacks"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"vmshield nids failed:\n{proc.stdout}\n{proc.stderr}"
    # Nor may ours have hit a limit (per-packet event cap, stream memcap …).
    assert "limits:" not in proc.stdout, proc.stdout
    return _alerts(eve), proc.stdout + proc.stderr


def _suricata() -> str:
    # Fail, not skip: without Suricata there is no comparison, and CI must not pass silently.
    exe = shutil.which("suricata")
    assert exe is not None, "suricata is not installed (this test runs it): run `make bootstrap`"
    return exe


def _rules_by_sid() -> dict[int, str]:
    """sid -> msg of every rule in RULES."""
    out = {}
    for line in RULES.splitlines():
        m = re.search(r'msg:"([^"]*)".*\bsid:(\d+);', line)
        if m:
            out[int(m.group(2))] = m.group(1)
    return out


def _diff(sur: Counter[Alert], ours: Counter[Alert], msgs: dict[int, str]) -> str:
    lines = []
    for key in sorted(set(sur) | set(ours)):
        if sur[key] != ours[key]:
            lines.append(f"  sid {key[0]} ({msgs.get(key[0], '?')}) {key[1]}:{key[2]} -> "
                         f"{key[3]}:{key[4]}: suricata {sur[key]}, vmshield {ours[key]}")  # fmt: skip
    return "\n".join(lines)


def _only(alerts: Counter[Alert], sids: set[int], keep: bool) -> Counter[Alert]:
    return Counter({k: n for k, n in alerts.items() if (k[0] in sids) == keep})


def test_alerts_match_suricata(tmp_path: Path) -> None:
    exe = _suricata()
    msgs = _rules_by_sid()
    cap = tmp_path / "traffic.pcap"
    _write_pcap(cap, _capture())
    rules = tmp_path / "differential.rules"
    rules.write_text(RULES)

    sur, sur_log = _run_suricata(exe, cap, rules, tmp_path / "suricata")
    ours, our_out = _run_ours(cap, rules, tmp_path / "vmshield-eve.json")

    # Every rule loaded in both: a rule one of them rejects would make its silence meaningless.
    assert f"{len(msgs)} rules successfully loaded, 0 rules failed" in sur_log, sur_log
    assert f"rules: {len(msgs)} loaded, 0 rejected" in our_out, our_out

    known = set(KNOWN_DIFFERENCES)
    compared_sur, compared_ours = _only(sur, known, False), _only(ours, known, False)
    assert compared_sur == compared_ours, (
        "alerts differ between Suricata and vmshield (sids in KNOWN_DIFFERENCES left out):\n"
        + _diff(compared_sur, compared_ours, msgs)
    )
    # A known difference that went away must leave the list, so the list stays true.
    for sid, reason in KNOWN_DIFFERENCES.items():
        s, o = _only(sur, {sid}, True), _only(ours, {sid}, True)
        assert s != o, f"sid {sid} now agrees with Suricata: remove it from KNOWN_DIFFERENCES"
        assert s and set(s) == set(o), f"sid {sid} ({reason}) differs beyond its count:\n" + _diff(
            s, o, msgs
        )

    # Both directions are checked: every rule meant to match alerted (in both, by the equality),
    # no near miss did, and the totals are what this traffic gives.
    alerted = {k[0] for k in sur}
    silent = {sid for sid, msg in msgs.items() if msg.startswith("NEAR MISS")} | NOALERT
    assert alerted == set(msgs) - silent, (
        f"rules meant to alert but silent: {sorted(set(msgs) - silent - alerted)}; "
        f"near misses that alerted: {sorted(alerted & silent)}"
    )
    assert (sum(sur.values()), sum(ours.values())) == (EXPECTED_SURICATA, EXPECTED_OURS)


# Loading: rules Suricata 7 rejects, which vmshield must reject too, next to near relatives that
# both load.
LOADER_RULES = """
alert http any any -> any any (msg:"request and response buffers"; http.method; content:"GET"; http.stat_code; content:"200"; sid:2001;)
alert http any any -> any any (msg:"response buffer, flow to_server"; flow:to_server; http.stat_code; content:"200"; sid:2002;)
alert http any any -> any any (msg:"request buffer, flow to_client"; flow:established,to_client; http.uri; content:"/x"; sid:2003;)
alert dns any any -> any any (msg:"dns.query is the request"; flow:to_client; dns.query; content:"example"; sid:2004;)
alert tls any any -> any any (msg:"ja3.hash not a hash"; ja3.hash; content:"e7eca2ba"; sid:2005;)
alert http any any -> any any (msg:"upper case for a lower-case buffer"; http.host; content:"Example.com"; sid:2006;)
alert http any any -> any any (msg:"pcre buffer flag under a sticky buffer"; http.stat_msg; content:"OK"; pcre:"/x/U"; sid:2007;)
alert http any any -> any any (msg:"unknown keyword"; content:"x"; no_such_keyword; sid:2008;)
alert http any any -> any any (msg:"to_server and to_client"; flow:to_server,to_client; content:"x"; sid:2009;)
alert http any any -> any any (msg:"status and body"; http.stat_code; content:"200"; file.data; content:"x"; sid:2101;)
alert tls any any -> any any (msg:"sni and certificate"; tls.sni; content:"a"; tls.cert_subject; content:"b"; sid:2102;)
alert http any any -> any any (msg:"header both ways"; flow:to_client; http.header; content:"x"; sid:2103;)
alert http any any -> any any (msg:"body both ways"; flow:to_server; file.data; content:"x"; sid:2104;)
alert tls any any -> any any (msg:"ja3.hash upper case"; ja3.hash; content:"E7ECA2BAF4458D095B7F45DA28C16C34"; sid:2105;)
alert http any any -> any any (msg:"request side only"; flow:to_server; http.uri; content:"/x"; http.user_agent; content:"a"; sid:2106;)
"""
LOADER_REJECTED = {2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009}


def test_rule_loading_matches_suricata(tmp_path: Path) -> None:
    exe = _suricata()
    rules = tmp_path / "loader.rules"
    rules.write_text(LOADER_RULES)
    cmd = [exe, "-T", "-S", str(rules), "-l", str(tmp_path), "--set", "unix-command.enabled=no"]
    subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    log = (tmp_path / "suricata.log").read_text()
    sid_at_line = {n: int(m.group(1)) for n, line in enumerate(LOADER_RULES.splitlines(), 1)
                   if (m := re.search(r"sid:(\d+);", line))}  # fmt: skip
    sur = {
        sid_at_line[int(n)] for n in re.findall(r"error parsing signature .* at line (\d+)", log)
    }
    ours = {e.sid for e in RuleSet.load(paths=[rules]).rejected}
    assert sur == LOADER_REJECTED, log
    assert ours == sur, (
        f"rejected by Suricata only: {sorted(sur - ours)}; by vmshield only: {sorted(ours - sur)}"
    )


# (proto, src_ip, src_port, dest_ip, dest_port) of a flow, initiator first.
FlowKey = tuple[str, str, int, str, int]


def _eve_records(eve: Path, event_type: str) -> list[dict[str, Any]]:
    out = []
    for line in eve.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("event_type") == event_type:
            out.append(ev)
    return out


def _flow_key(ev: dict[str, Any]) -> FlowKey:
    return (
        ev["proto"],
        ipaddress.ip_address(ev["src_ip"]).compressed,
        ev.get("src_port", 0),
        ipaddress.ip_address(ev["dest_ip"]).compressed,
        ev.get("dest_port", 0),
    )


def _flow_fields(ev: dict[str, Any]) -> dict[str, Any]:
    """What an EVE consumer reads of a flow record besides counters and times: TCP flags (hex
    and Suricata's one boolean per flag) and the ICMP type and code."""
    tcp = ev.get("tcp", {})
    keep = {"tcp_flags", "tcp_flags_ts", "tcp_flags_tc", "syn", "fin", "rst", "psh", "ack",
            "urg", "ecn", "cwr"}  # fmt: skip
    out: dict[str, Any] = {k: v for k, v in tcp.items() if k in keep}
    for k in ("icmp_type", "icmp_code"):
        if k in ev:
            out[k] = ev[k]
    return out


def test_eve_flow_records_alert_flow_ends_and_pcap_cnt_match_suricata(tmp_path: Path) -> None:
    exe = _suricata()
    cap = tmp_path / "traffic.pcap"
    _write_pcap(cap, _capture())
    rules = tmp_path / "differential.rules"
    rules.write_text(RULES)
    _run_suricata(exe, cap, rules, tmp_path / "suricata")  # its default EVE has flow records
    eve = tmp_path / "vmshield-eve.json"
    cmd = [sys.executable, "-m", "vmshield", "nids", "--pcap", str(cap), "--rules", str(rules)]
    cmd += ["--eve", str(eve), "--home-net", HOME_NET, "--mode", "ids", "--no-attacks"]
    proc = subprocess.run([*cmd, "--flow-events"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    sur_flows = {
        _flow_key(ev): ev for ev in _eve_records(tmp_path / "suricata" / "eve.json", "flow")
    }
    our_flows = {_flow_key(ev): ev for ev in _eve_records(eve, "flow")}
    # Every TCP and ICMP flow Suricata reports, we report, with the same flags and ICMP fields.
    compared = [k for k in sur_flows if k[0] in ("TCP", "ICMP", "IPv6-ICMP")]
    assert len(compared) >= 6 and any(k[0] == "ICMP" for k in compared), compared
    missing = [k for k in compared if k not in our_flows]
    assert not missing, f"flows Suricata reports and vmshield does not: {missing}"
    differ = {
        k: (_flow_fields(sur_flows[k]), _flow_fields(our_flows[k]))
        for k in compared
        if _flow_fields(sur_flows[k]) != _flow_fields(our_flows[k])
    }
    assert not differ, "flow records differ (suricata, vmshield):\n" + "\n".join(
        f"  {k}: {v}" for k, v in differ.items()
    )

    # Suricata 7's alert `flow` object names the flow's own ends (initiator first), whatever
    # the direction of the alerting packet.
    def ends(ev: dict[str, Any]) -> tuple[Any, ...]:
        fl = ev["flow"]
        return (ipaddress.ip_address(fl["src_ip"]).compressed, fl.get("src_port", 0),
                ipaddress.ip_address(fl["dest_ip"]).compressed, fl.get("dest_port", 0))  # fmt: skip

    def by_alert(path: Path) -> dict[tuple[int, FlowKey], set[tuple[Any, ...]]]:
        out: dict[tuple[int, FlowKey], set[tuple[Any, ...]]] = {}
        for ev in _eve_records(path, "alert"):
            out.setdefault((ev["alert"]["signature_id"], _flow_key(ev)), set()).add(ends(ev))
        return out

    sur_alerts, our_alerts = by_alert(tmp_path / "suricata" / "eve.json"), by_alert(eve)
    common = set(sur_alerts) & set(our_alerts)
    assert len(common) >= 40, len(common)
    assert {k: sur_alerts[k] for k in common} == {k: our_alerts[k] for k in common}
    # To-client alerts are there, so the flow's ends are not just the packet's addresses.
    assert any(k[1][1] != next(iter(v))[0] for k, v in our_alerts.items()), our_alerts

    # `pcap_cnt` names the capture's packet an alert came with. Stateless (UDP, ICMP) alerts
    # come with the same packet in both; TCP ones do not: Suricata in IDS mode inspects a
    # stream once the data is acknowledged, vmshield as the data arrives (as inline).
    def packets(path: Path) -> Counter[tuple[int, FlowKey, int]]:
        return Counter(
            (ev["alert"]["signature_id"], _flow_key(ev), ev["pcap_cnt"])
            for ev in _eve_records(path, "alert")
            if ev["proto"] in ("UDP", "ICMP", "IPv6-ICMP")
        )

    sur_pkts, our_pkts = packets(tmp_path / "suricata" / "eve.json"), packets(eve)
    assert len(sur_pkts) >= 5 and sur_pkts == our_pkts, (sur_pkts, our_pkts)
