"""`vmshield nids`: EVE output, summary, rejected rules, URL database, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nids_capgen import TcpConv
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from vmshield.cli import main

RULES = (
    'alert http any any -> any any (msg:"evil uri"; http.uri; content:"/evil"; sid:10; rev:1;)\n'
    "# a comment\n"
    'alert tcp any any -> any any (msg:"bad keyword"; no_such_keyword; sid:11;)\n'
)


def _capture(tmp_path: Path, host: str = "www.example.net", uri: str = "/evil/payload") -> Path:
    c = TcpConv().handshake()
    c.send(f"GET {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n".encode())
    c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", toserver=False)
    c.fin()
    pkts = []
    for ts, f in c.frames:
        p = Ether(f)
        p.time = ts
        pkts.append(p)
    path = tmp_path / "http.pcap"
    wrpcap(str(path), pkts)
    return path


def _eve(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pcap_with_rules_writes_eve_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = _capture(tmp_path)
    rules = tmp_path / "local.rules"
    rules.write_text(RULES)
    eve = tmp_path / "eve.json"
    rc = main(
        ["nids", "--pcap", str(pcap), "--rules", str(rules), "--eve", str(eve), "--flow-events"]
    )
    out = capsys.readouterr()
    assert rc == 0
    objs = _eve(eve)
    types = [o["event_type"] for o in objs]
    assert types.count("alert") == 1 and types.count("http") == 1 and types.count("flow") == 1
    alert = next(o for o in objs if o["event_type"] == "alert")
    assert alert["alert"]["signature_id"] == 10 and alert["alert"]["signature"] == "evil uri"
    assert "packets: 8" in out.out and "alerts: 1" in out.out
    assert "rules: 1 loaded, 1 rejected" in out.out
    # The rejected rule is named with its file and line.
    assert f"{rules}:3" in out.err and "no_such_keyword" in out.err


def test_eve_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcap = _capture(tmp_path)
    assert main(["nids", "--pcap", str(pcap), "--eve", "-"]) == 0
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.splitlines()]
    assert [x["event_type"] for x in lines] == ["http"]
    assert "packets: 8" in out.err  # summary goes to stderr when EVE is on stdout


def test_url_database_blocks_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vmshield.engines.net.urls.db import DatabaseBuilder, category_bits

    b = DatabaseBuilder()
    b.add_expression("phish.example/", category_bits("phishing"))
    db = tmp_path / "urls.db"
    b.write(db)
    pcap = _capture(tmp_path, host="phish.example", uri="/login")
    eve = tmp_path / "eve.json"
    assert main(["nids", "--pcap", str(pcap), "--url-db", str(db), "--eve", str(eve)]) == 0
    urls = [o for o in _eve(eve) if o["event_type"] == "url"]
    assert len(urls) == 1
    assert urls[0]["url"]["categories"] == ["phishing"] and urls[0]["url"]["source"] == "http"
    assert "urls: 1" in capsys.readouterr().out


def test_missing_capture_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["nids", "--pcap", str(tmp_path / "nope.pcap"), "--eve", str(tmp_path / "e.json")])
    assert rc == 2
    assert "nope.pcap" in capsys.readouterr().err


def test_not_a_capture_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture at all")
    assert main(["nids", "--pcap", str(bad), "--eve", str(tmp_path / "e.json")]) == 2
    assert "not a pcap or pcapng" in capsys.readouterr().err


def test_truncated_capture_processes_what_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = _capture(tmp_path)
    data = pcap.read_bytes()
    pcap.write_bytes(data[:-30])
    eve = tmp_path / "eve.json"
    rc = main(["nids", "--pcap", str(pcap), "--eve", str(eve)])
    out = capsys.readouterr()
    assert rc == 2
    assert "truncated" in out.err and "after 7 packets" in out.err
    assert "packets: 7" in out.out
    assert [o["event_type"] for o in _eve(eve)] == ["http"]  # flushed at the end


def test_bad_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcap = _capture(tmp_path)
    cfg = tmp_path / "nids.toml"
    cfg.write_text('[stream]\nreassembly.depth = "big"\n')
    assert main(["nids", "--pcap", str(pcap), "--config", str(cfg)]) == 2
    assert "stream.reassembly.depth" in capsys.readouterr().err
    cfg.write_text("[stream]\nreasembly-depth = 5\n")
    assert main(["nids", "--pcap", str(pcap), "--config", str(cfg)]) == 2
    assert "unknown key 'stream.reasembly-depth'" in capsys.readouterr().err


def test_config_file_is_applied(tmp_path: Path) -> None:
    pcap = _capture(tmp_path)
    cfg = tmp_path / "nids.toml"
    cfg.write_text('mode = "ids"\n[outputs]\nhttp = false\nflow = true\n')
    eve = tmp_path / "eve.json"
    assert main(["nids", "--pcap", str(pcap), "--config", str(cfg), "--eve", str(eve)]) == 0
    assert [o["event_type"] for o in _eve(eve)] == ["flow"]


def test_missing_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcap = _capture(tmp_path)
    assert main(["nids", "--pcap", str(pcap), "--rules", str(tmp_path / "x.rules")]) == 2
    assert "x.rules" in capsys.readouterr().err


def test_home_net_is_used_by_rules(tmp_path: Path) -> None:
    pcap = _capture(tmp_path)
    rules = tmp_path / "r.rules"
    rules.write_text(
        'alert http $HOME_NET any -> any any (msg:"from home"; http.uri; content:"/evil"; sid:20;)\n'
    )
    eve = tmp_path / "eve.json"
    args = ["nids", "--pcap", str(pcap), "--rules", str(rules), "--eve", str(eve)]
    assert main([*args, "--home-net", "192.168.0.0/16"]) == 0
    assert not [o for o in _eve(eve) if o["event_type"] == "alert"]
    assert main([*args, "--home-net", "10.1.0.0/16"]) == 0
    assert [o["alert"]["signature_id"] for o in _eve(eve) if o["event_type"] == "alert"] == [20]


def _scan_capture(tmp_path: Path) -> Path:
    from scapy.layers.inet import IP, TCP

    pkts = []
    for i, port in enumerate(range(1, 60)):
        p = Ether() / IP(src="10.7.7.7", dst="10.1.0.20") / TCP(sport=55555, dport=port, flags="S")
        p.time = 1_700_000_000 + i * 0.01
        pkts.append(p)
    path = tmp_path / "scan.pcap"
    wrpcap(str(path), pkts)
    return path


def test_port_scan_is_reported_with_the_vendor_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = _scan_capture(tmp_path)
    eve = tmp_path / "eve.json"
    assert main(["nids", "--pcap", str(pcap), "--eve", str(eve)]) == 0
    attacks = [o for o in _eve(eve) if o["event_type"] == "attack"]
    assert [a["attack"]["name"] for a in attacks] == ["Scan.Generic.PortScan.TCP"]
    assert attacks[0]["src_ip"] == "10.7.7.7"
    out = capsys.readouterr().out
    assert "attacks: 1" in out and "block_source" in out


def test_attack_thresholds_from_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = _scan_capture(tmp_path)
    cfg = tmp_path / "nids.toml"
    cfg.write_text("[attacks.tcp_port_scan]\nthreshold = 1000\n")
    eve = tmp_path / "eve.json"
    assert main(["nids", "--pcap", str(pcap), "--config", str(cfg), "--eve", str(eve)]) == 0
    assert not [o for o in _eve(eve) if o["event_type"] == "attack"]
    cfg.write_text("[attacks.tcp_port_scann]\nthreshold = 1\n")
    assert main(["nids", "--pcap", str(pcap), "--config", str(cfg), "--eve", str(eve)]) == 2
    assert "tcp_port_scann" in capsys.readouterr().err


def test_limits_hit_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scapy.layers.inet import IP, UDP

    pkts = []
    for i in range(300):
        p = Ether() / IP(src="10.1.0.10", dst="10.1.0.20") / UDP(sport=2000 + i, dport=9) / b"x"
        p.time = 1_700_000_000 + i * 0.001
        pkts.append(p)
    pcap = tmp_path / "many.pcap"
    wrpcap(str(pcap), pkts)
    cfg = tmp_path / "small.toml"
    cfg.write_text("[flow]\nmax-flows = 100\n")
    assert (
        main(["nids", "--pcap", str(pcap), "--config", str(cfg), "--eve", str(tmp_path / "e.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert "limits: flows evicted (table full)" in out and "flows: 300" in out


def test_cycle_collections_during_a_batch_run_lose_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch run collects cycles when the tracked objects have grown by
    # native.BATCH_YOUNG_OBJECTS (native.batch_gc): with a threshold of 5, passes run all
    # through the capture and must change nothing; the thresholds are restored afterwards.
    import gc

    from vmshield import native

    pcap = _capture(tmp_path)
    rules = tmp_path / "local.rules"
    rules.write_text(RULES)
    outputs = []
    passes = []
    for young in (native.BATCH_YOUNG_OBJECTS, 5):
        monkeypatch.setattr(native, "BATCH_YOUNG_OBJECTS", young)
        eve = tmp_path / f"eve{young}.json"
        args = ["nids", "--pcap", str(pcap), "--rules", str(rules), "--eve", str(eve)]
        before = gc.get_stats()[0]["collections"]
        assert main([*args, "--flow-events"]) == 0
        passes.append(gc.get_stats()[0]["collections"] - before)
        summary = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("time:")]
        events = [{k: v for k, v in o.items() if k != "event_id"} for o in _eve(eve)]
        outputs.append((summary, events))
        assert gc.isenabled()
        assert gc.get_threshold()[0] != young
    assert passes[1] > passes[0]
    assert outputs[0] == outputs[1]
    assert "packets: 8" in "\n".join(outputs[1][0])
