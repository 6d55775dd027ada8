"""Fuzz target: the Suricata rule parser, and a match of whatever it accepts.

Half of the inputs are free text; the other half are rules assembled from real keywords with
fuzzed values, so every keyword handler and the matcher behind it are exercised. Any input must
give loaded or rejected rules (each with a reason), never an exception.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from vmshield.engines.net.packet import Packet
    from vmshield.engines.net.rules import FlowDetectState, InspectContext, RuleSet
    from vmshield.engines.net.rules.parser import KEYWORDS, LEGACY, STICKY
    from vmshield.engines.net.rules.transforms import TRANSFORMS

_NAMES = sorted(set(KEYWORDS) | set(LEGACY) | set(STICKY) | set(TRANSFORMS))
_HEADERS = ("alert tcp any any -> any any", "alert http any any -> any any",
            "drop ip $HOME_NET any <> $EXTERNAL_NET any", "alert udp any 53 -> any any")  # fmt: skip


def _assembled(fdp: atheris.FuzzedDataProvider) -> str:
    opts = []
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        kw = _NAMES[fdp.ConsumeIntInRange(0, len(_NAMES) - 1)]
        if fdp.ConsumeBool():
            opts.append(f"{kw}:{fdp.ConsumeUnicodeNoSurrogates(24)};")
        else:
            opts.append(f"{kw};")
    return f"{_HEADERS[fdp.ConsumeIntInRange(0, len(_HEADERS) - 1)]} ({' '.join(opts)} sid:1;)"


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = _assembled(fdp) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(2048)
    rs = RuleSet.from_text(text)
    for e in rs.rejected:
        assert e.reason
    if not rs.rules:
        return
    payload = fdp.ConsumeBytes(512)
    p = Packet(ts=1.0, raw=b"", ip_version=4, src="10.0.0.1", dst="10.0.0.2",
               src_bytes=b"\x0a\x00\x00\x01", dst_bytes=b"\x0a\x00\x00\x02", proto=6,
               sport=1234, dport=80, payload=payload, tcp_flags=fdp.ConsumeInt(1) & 0xFF)  # fmt: skip
    fs = FlowDetectState()
    for stream in (None, payload[::-1]):
        ctx = InspectContext(packet=p, direction="to_server", established=True, flow_state=fs,
                             stream=stream, app_proto="http", tx_id=0,
                             buffers={"http.uri": payload[:64], "dns.query": [payload[:10]],
                                      "http.request_body": payload})  # fmt: skip
        rs.match(ctx)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
