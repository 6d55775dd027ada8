"""Engine configuration: TOML keys, checks that name the key, effect on the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from vmshield.engines.net.config import ConfigError, EngineConfig
from vmshield.engines.net.engine import Engine


def test_defaults_are_suricatas() -> None:
    c = EngineConfig()
    assert c.stream_depth == 1024 * 1024 and c.mode == "ips"
    assert set(c.home_net) == {"192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12"}


def test_toml_file(tmp_path: Path) -> None:
    f = tmp_path / "n.toml"
    f.write_text(
        'mode = "ids"\nhome-net = "[10.0.0.0/8, 192.0.2.0/24]"\n'
        "[stream]\nreassembly.depth = 4096\n"
        "[flow.timeouts.udp]\nnew = 5\n"
        '[app.tls]\nencryption-handling = "full"\n'
        '[vars.address-groups]\nHTTP_SERVERS = "[10.0.0.5]"\n'
    )
    c = EngineConfig.from_toml(f)
    assert c.mode == "ids" and c.home_net == ["10.0.0.0/8", "192.0.2.0/24"]
    assert c.stream_depth == 4096 and c.flow_timeouts["udp"] == [5, 300, 0]
    assert c.tls_encryption_handling == "full" and c.address_vars == {"HTTP_SERVERS": "[10.0.0.5]"}


@pytest.mark.parametrize(
    "text,needle",
    [
        ('mode = "inline"\n', "mode"),
        ("[stream]\nreassembly.depth = -1\n", "stream.reassembly.depth"),
        ("[flow.timeouts.sctp]\nnew = 1\n", "flow.timeouts.sctp"),
        ("[flow.timeouts.tcp]\nneww = 1\n", "neww"),
        ('home-net = ["10.0.0.0/33"]\n', "home-net"),
        ("[outputs]\nhttp = 1\n", "outputs.http"),
        ("this is = not toml [\n", "invalid TOML"),
        ("[ids]\nblock-minutes = -1\n", "ids.block-minutes"),
        ("[ids]\nblock-minutes = 40000\n", "ids.block-minutes"),
        ('[ids]\nblock-minutes = "60"\n', "ids.block-minutes"),
        ("[ids]\nblock-minutes = true\n", "ids.block-minutes"),
        ("[ids]\nblock-minute = 5\n", "ids.block-minute"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        EngineConfig.from_toml(f)


def test_ids_block_minutes_from_toml_and_checked(tmp_path: Path) -> None:
    assert EngineConfig().ids_block_minutes == 0  # off: rules act as written
    f = tmp_path / "n.toml"
    f.write_text("[ids]\nblock-minutes = 45\n")
    assert EngineConfig.from_toml(f).ids_block_minutes == 45
    with pytest.raises(ConfigError, match=r"ids\.block-minutes: .*0\.\.32768.*got -5"):
        EngineConfig(ids_block_minutes=-5)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        EngineConfig.from_toml("/nonexistent/vmshield.toml")


def test_udp_timeout_from_config_applies() -> None:
    e = Engine(
        EngineConfig.from_dict(
            {"flow": {"timeouts": {"udp": {"new": 5}}}, "outputs": {"flow": True}}
        )
    )
    e.process(
        bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"x"), 100.0
    )
    assert e.flush(104.0) == []
    assert [ev.event_type for ev in e.flush(106.0)] == ["flow"]
