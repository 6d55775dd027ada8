"""The engine's URL category policy on a generated database: blocked, allowed, other."""

from __future__ import annotations

from pathlib import Path

import pytest
from nids_capgen import CLIENT, SERVER, TcpConv, client_hello, udp_frame
from scapy.layers.dns import DNS, DNSQR

from vmshield.engines.net.config import ConfigError, EngineConfig
from vmshield.engines.net.engine import Action, Engine
from vmshield.engines.net.urls import THREAT_CATEGORIES, UrlDatabase, build_database


@pytest.fixture
def db(tmp_path: Path) -> UrlDatabase:
    """Category lists as a user builds them: a threat feed and two content lists."""
    lists = {
        "bad.txt": "malware.example\n",
        "gambling": "casino.example\n",
        "social": "friends.example\nboth.example\n",
        "adult": "both.example\n",
    }
    for name, text in lists.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "u.db"
    build_database(
        [("plain", tmp_path / "bad.txt")],
        out,
        lists=[(c, tmp_path / c) for c in ("gambling", "social", "adult")],
    )
    return UrlDatabase(out)


_ports = iter(range(41000, 42000))


def _get(e: Engine, host: str) -> tuple[list, list]:  # type: ignore[type-arg]
    c = TcpConv(cport=next(_ports)).handshake()
    c.send(f"GET /page HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    results = [e.process(f, ts) for ts, f in c.frames]
    urls = [ev.data["url"] for r in results for ev in r.events if ev.event_type == "url"]
    return urls, [r.verdict.action for r in results]


def test_default_blocks_threats_and_alerts_on_content(db: UrlDatabase) -> None:
    e = Engine(EngineConfig(mode="ips"), url_db=db)
    urls, verdicts = _get(e, "malware.example")
    assert [u["action"] for u in urls] == ["blocked"] and urls[0]["categories"] == ["malicious"]
    assert verdicts[3] == Action.RESET  # the request: the block page
    urls, verdicts = _get(e, "casino.example")
    assert [(u["action"], u["categories"]) for u in urls] == [("allowed", ["gambling"])]
    assert set(verdicts) == {Action.ACCEPT}
    # Severity: a threat is high, a content category alone low (a policy matter).
    sev: dict[str, int] = {}
    for host in ("malware.example", "casino.example"):
        c = TcpConv(cport=next(_ports)).handshake()
        c.send(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        for ts, f in c.frames:
            for ev in e.process(f, ts).events:
                if ev.event_type == "url":
                    sev[host] = ev.severity
    assert sev == {"malware.example": 1, "casino.example": 3}


def test_blocked_category_gets_the_block_page(db: UrlDatabase) -> None:
    cfg = EngineConfig(mode="ips", url_block=[*THREAT_CATEGORIES, "gambling"])
    e = Engine(cfg, url_db=db)
    c = TcpConv().handshake()
    c.send(b"GET /roulette HTTP/1.1\r\nHost: www.casino.example\r\n\r\n")
    r = [e.process(f, ts) for ts, f in c.frames][3]
    assert r.verdict.action == Action.RESET and r.verdict.block_page is not None
    page = r.verdict.block_page.http_response()
    assert page.startswith(b"HTTP/1.1 403") and b"gambling" in page
    (u,) = [ev.data["url"] for ev in r.events if ev.event_type == "url"]
    assert u["action"] == "blocked" and u["categories"] == ["gambling"]


def test_allowed_category_passes_without_event(db: UrlDatabase) -> None:
    cfg = EngineConfig(mode="ips", url_allow=["social"])
    e = Engine(cfg, url_db=db)
    urls, verdicts = _get(e, "friends.example")
    assert urls == [] and set(verdicts) == {Action.ACCEPT}
    assert e.stats()["url_allowed"] == 1 and e.stats()["url_hits"] == 1
    # Listed as social and adult: adult is not allowed, so the hit is reported (alert).
    urls, verdicts = _get(e, "both.example")
    assert [(u["action"], u["categories"]) for u in urls] == [("allowed", ["adult", "social"])]
    # A blocked category wins over an allowed one.
    e = Engine(EngineConfig(mode="ips", url_block=["adult"], url_allow=["social"]), url_db=db)
    urls, verdicts = _get(e, "both.example")
    assert [u["action"] for u in urls] == ["blocked"] and Action.RESET in verdicts


def test_policy_applies_to_tls_sni_and_dns(db: UrlDatabase) -> None:
    cfg = EngineConfig(
        mode="ips", url_block=["gambling"], url_allow=["social"], url_dns_action="drop"
    )
    e = Engine(cfg, url_db=db)
    c = TcpConv(sport=443, cport=next(_ports)).handshake()
    c.send(client_hello("casino.example", ciphers=[0x1301]))
    assert [e.process(f, ts) for ts, f in c.frames][-1].verdict.action == Action.RESET
    # malicious is not blocked by this policy: the SNI is reported, the connection goes on.
    c = TcpConv(sport=443, cport=next(_ports)).handshake()
    c.send(client_hello("malware.example", ciphers=[0x1301]))
    r = [e.process(f, ts) for ts, f in c.frames][-1]
    assert r.verdict.action != Action.RESET
    assert [ev.data["url"]["action"] for ev in r.events if ev.event_type == "url"] == ["allowed"]
    q = bytes(DNS(id=3, rd=1, qd=DNSQR(qname="friends.example")))
    r = e.process(udp_frame(CLIENT, SERVER, 40001, 53, q), 2.0)
    assert r.verdict.action == Action.ACCEPT  # allowed: no url event (the dns event stays)
    assert [ev.event_type for ev in r.events] == ["dns"]
    q = bytes(DNS(id=4, rd=1, qd=DNSQR(qname="www.casino.example")))
    r = e.process(udp_frame(CLIENT, SERVER, 40002, 53, q), 3.0)
    assert r.verdict.action == Action.DROP  # blocked, with url.dns-action drop


def test_category_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"url.block-categories: unknown URL categories \['casino'\]"
    ):
        EngineConfig(url_block=["casino"])
    with pytest.raises(ConfigError, match=r"both blocked and allowed: \['social'\]"):
        EngineConfig(url_block=["social"], url_allow=["social"])
    toml = tmp_path / "e.toml"
    toml.write_text(
        '[url]\nblock-categories = ["malicious", "adult"]\nallow-categories = ["games"]\n'
    )
    cfg = EngineConfig.from_toml(toml)
    assert cfg.url_block == ["malicious", "adult"] and cfg.url_allow == ["games"]
    toml.write_text('[url]\nblock-categories = "adult"\n')
    with pytest.raises(ConfigError, match="url.block-categories: expected a list"):
        EngineConfig.from_toml(toml)


def test_trusted_urls_win_over_blocked_categories(db: UrlDatabase) -> None:
    cfg = EngineConfig(
        mode="ips",
        url_block=["gambling", "malicious"],
        url_trusted=["*.casino.example", "http://malware.example/updates/"],
    )
    e = Engine(cfg, url_db=db)
    urls, verdicts = _get(e, "www.casino.example")  # a trusted host and everything below it
    assert urls == [] and set(verdicts) == {Action.ACCEPT}
    c = TcpConv(cport=next(_ports)).handshake()
    c.send(b"GET /updates/v2.bin HTTP/1.1\r\nHost: malware.example\r\n\r\n")
    assert {e.process(f, ts).verdict.action for ts, f in c.frames} == {Action.ACCEPT}
    urls, verdicts = _get(e, "malware.example")  # /page: not under the trusted path
    assert [u["action"] for u in urls] == ["blocked"]
    c = TcpConv(sport=443, cport=next(_ports)).handshake()
    c.send(client_hello("casino.example", ciphers=[0x1301]))
    assert [e.process(f, ts) for ts, f in c.frames][-1].verdict.action == Action.ACCEPT
    # A trusted URL with a path does not trust the host's TLS connections.
    c = TcpConv(sport=443, cport=next(_ports)).handshake()
    c.send(client_hello("malware.example", ciphers=[0x1301]))
    assert [e.process(f, ts) for ts, f in c.frames][-1].verdict.action == Action.RESET
    assert e.stats()["url_allowed"] == 3
    with pytest.raises(ConfigError, match="url.trusted: trusted URL 2 'com': refusing"):
        EngineConfig(url_trusted=["ok.example", "com"])
