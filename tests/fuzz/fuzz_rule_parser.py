"""Fuzz target: the Suricata rule parser and a match of what it accepts.

Any input must give loaded or rejected rules (with a reason), never an exception; accepted
rules must run against a packet without an exception.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from vmshield.engines.net.packet import Packet
    from vmshield.engines.net.rules import FlowDetectState, InspectContext, RuleSet

_SEED_PREFIX = "alert tcp any any -> any any ("


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(2048)
    if fdp.ConsumeBool():
        text = _SEED_PREFIX + text + " sid:1;)"
    rs = RuleSet.from_text(text)
    assert rs.stats.loaded + rs.stats.rejected >= 0
    for e in rs.rejected:
        assert e.reason
    if rs.rules:
        payload = fdp.ConsumeBytes(512)
        p = Packet(ts=1.0, raw=b"", ip_version=4, src="10.0.0.1", dst="10.0.0.2",
                   src_bytes=b"\x0a\x00\x00\x01", dst_bytes=b"\x0a\x00\x00\x02", proto=6,
                   sport=1234, dport=80, payload=payload, tcp_flags=fdp.ConsumeInt(1) & 0xFF)  # fmt: skip
        ctx = InspectContext(packet=p, direction="to_server", established=True,
                             flow_state=FlowDetectState(), stream=payload[::-1],
                             buffers={"http.uri": payload[:64], "dns.query": [payload[:10]]},
                             app_proto="http", tx_id=0)  # fmt: skip
        rs.match(ctx)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
