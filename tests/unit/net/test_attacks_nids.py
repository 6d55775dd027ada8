"""Attacks and URLs through the whole offline pipeline: `vmshield nids` on a generated capture,
with the [attacks] table of the engine configuration and a database from `vmshield url build`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from vmshield.cli import main


def _capture(path: Path) -> None:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pkts = []
    # A SYN scan from 10.0.0.66 and the same from an excluded monitoring host 10.0.0.9.
    for scanner in ("10.0.0.66", "10.0.0.9"):
        for port in range(1, 41):
            pkts.append(
                eth / IP(src=scanner, dst="10.0.0.5") / TCP(sport=45000, dport=port, flags="S")
            )
    # A DNS query for a listed domain.
    dns = (
        bytes.fromhex("1234 0100 0001 0000 0000 0000")
        + b"\x03www\x04evil\x07example\x00"
        + b"\x00\x01\x00\x01"
    )
    pkts.append(eth / IP(src="10.0.0.20", dst="10.0.0.53") / UDP(sport=33333, dport=53) / Raw(dns))
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.001
    wrpcap(str(path), pkts)


def test_nids_reports_attacks_and_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = tmp_path / "c.pcap"
    _capture(cap)
    feed = tmp_path / "feed.txt"
    feed.write_text("evil.example\n")
    db = tmp_path / "u.db"
    assert (
        main(
            ["url", "build", "--feed", "plain", "--category", "phishing", str(feed), "-o", str(db)]
        )
        == 0
    )
    conf = tmp_path / "engine.toml"
    conf.write_text(
        'mode = "ips"\n[attacks]\nnever_block = ["10.0.0.9/32"]\n'
        "[attacks.tcp_port_scan]\nthreshold = 30\nwindow = 5\n"
    )
    eve = tmp_path / "eve.json"
    rc = main(
        ["nids", "--pcap", str(cap), "--url-db", str(db), "--config", str(conf), "--eve", str(eve)]
    )
    capsys.readouterr()
    assert rc == 0
    events = [json.loads(line) for line in eve.read_text().splitlines()]
    attacks = [e for e in events if e["event_type"] == "attack"]
    assert [(a["src_ip"], a["attack"]["name"], a["attack"]["action"]) for a in attacks] == [
        ("10.0.0.66", "Scan.Generic.PortScan.TCP", "block"),
        ("10.0.0.9", "Scan.Generic.PortScan.TCP", "terminate"),
    ]
    assert attacks[0]["attack"]["ports"] == 30  # the configured threshold
    assert attacks[1]["attack"]["not_blocked"] == "source may not be blocked"
    urls = [e for e in events if e["event_type"] == "url"]
    assert len(urls) == 1 and urls[0]["url"]["source"] == "dns"
    assert (
        urls[0]["url"]["categories"] == ["phishing"]
        and urls[0]["url"]["expression"] == "evil.example/"
    )


def test_nids_rejects_a_bad_attack_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cap = tmp_path / "c.pcap"
    _capture(cap)
    conf = tmp_path / "engine.toml"
    conf.write_text('[attacks.syn_flood]\naction = "ban"\n')
    rc = main(
        ["nids", "--pcap", str(cap), "--config", str(conf), "--eve", str(tmp_path / "e.json")]
    )
    assert rc == 2
    assert "attacks.syn_flood.action: 'ban'" in capsys.readouterr().err


def test_engine_checks_http_sni_and_dns_against_the_url_database(tmp_path: Path) -> None:
    from tests.unit.net.nids_capgen import TcpConv, client_hello

    from vmshield.engines.net.config import EngineConfig
    from vmshield.engines.net.engine import Engine
    from vmshield.engines.net.urls import UrlDatabase, build_database

    feed = tmp_path / "feed.txt"
    feed.write_text("evil.example\nhttp://mixed.example/bad/\n")
    trusted = tmp_path / "trusted.txt"
    trusted.write_text("good.evil.example\n")
    build_database([("plain", feed)], tmp_path / "u.db", trusted=[trusted])
    engine = Engine(EngineConfig(mode="ids"), url_db=UrlDatabase(tmp_path / "u.db"))

    def http(host: str, path: str, cport: int) -> TcpConv:
        conv = TcpConv(cport=cport).handshake()
        return conv.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

    convs = [
        http("www.evil.example", "/login.php", 40001),  # listed domain
        http("mixed.example", "/bad/x.exe?id=1", 40002),  # listed path prefix
        http("mixed.example", "/good/", 40003),  # same host, path not listed
        http("good.evil.example", "/", 40004),  # trusted wins
    ]
    tls = TcpConv(cport=40005, sport=443).handshake()
    tls.send(client_hello("cdn.evil.example", ciphers=[0x1301, 0xC02F]))
    convs.append(tls)
    events = []
    for conv in convs:
        for ts, frame in conv.frames:
            events += engine.process(frame, ts).events
    urls = [e.to_eve() for e in events if e.event_type == "url"]
    got = [(u["url"]["source"], u["url"]["expression"]) for u in urls]
    assert got == [
        ("http", "evil.example/"),
        ("http", "mixed.example/bad/"),
        ("tls.sni", "evil.example/"),
    ]
    assert urls[0]["url"]["url"] == "http://www.evil.example/login.php"
    assert all(u["url"]["categories"] == ["malicious"] for u in urls)
