"""Run by test_native_equivalence in a child process: one engine over generated, mutated frames;
prints one line per packet (decoded fields, verdict, events) so two runs can be compared."""

from __future__ import annotations

import random
import struct
import sys

from vmshield import native
from vmshield.engines.net.attacks import AttackDetector
from vmshield.engines.net.config import EngineConfig
from vmshield.engines.net.decode import decode
from vmshield.engines.net.engine import Engine
from vmshield.engines.net.rules import Classification, RuleSet, Variables
from vmshield.engines.net.rules.gen import TRIGGERS
from vmshield.engines.net.rules.gen import generate as gen_rules

_ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00"


def _ip(src: int, dst: int, proto: int, payload: bytes, frag: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), src & 0xFFFF, frag, 64, proto,
                      0, bytes([10, 0, 0, src % 250 + 1]), bytes([192, 168, 0, dst % 250 + 1]))  # fmt: skip
    return hdr + payload


def _frames(rng: random.Random, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        kind = rng.randrange(6)
        s, d = rng.randrange(8), rng.randrange(4)
        if kind == 0:  # HTTP request, sometimes with a rule trigger
            uri = rng.choice(TRIGGERS) if rng.random() < 0.3 else f"/x/{i}"
            data = f"GET {uri} HTTP/1.1\r\nHost: h{d}.example\r\n\r\n".encode()
            # A new connection per request, from hosts that do not scan (so never blocked).
            tcp = struct.pack("!HHIIBBHHH", 20000 + i, 80, i * 100, 1, 0x50, 0x18, 512, 0, 0)
            out.append(_ETH + _ip(100 + s, d, 6, tcp + data))
        elif kind == 1:  # handshake and teardown flags, options
            opts = b"\x02\x04\x05\xb4\x01\x03\x03\x07" if rng.random() < 0.5 else b""
            off = (20 + len(opts)) // 4 << 4
            flags = rng.choice([0x02, 0x12, 0x10, 0x11, 0x04, 0x03, 0x29])
            tcp = struct.pack(
                "!HHIIBBHHH", 1000 + s, rng.choice([80, 22, 445]), i, 0, off, flags, 1, 0, 0
            )
            out.append(_ETH + _ip(s, d, 6, tcp + opts))
        elif kind == 2:  # DNS query
            q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01"
            out.append(_ETH + _ip(s, d, 17, struct.pack("!HHHH", 5000 + s, 53, 8 + len(q), 0) + q))
        elif kind == 3:  # ICMP echo
            out.append(_ETH + _ip(s, d, 1, b"\x08\x00\x00\x00" + struct.pack("!HH", s, i)))
        elif kind == 4:  # fragments
            out.append(_ETH + _ip(s, d, 17, b"A" * 24, frag=rng.choice([0x2000, 0x0003, 0x2001])))
        else:  # VLAN-tagged UDP
            udp = struct.pack("!HHHH", 7000, 9999, 12, 0) + b"abcd"
            frame = _ETH[:12] + b"\x81\x00\x00\x05\x08\x00" + _ip(s, d, 17, udp)
            out.append(frame)
    # Mutate a share of them: flipped bytes and truncations (malformed input must agree too).
    for i in range(len(out)):
        r = rng.random()
        if r < 0.3:
            b = bytearray(out[i])
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            out[i] = bytes(b)
        elif r < 0.4:
            out[i] = out[i][: rng.randrange(len(out[i]))]
    return out


def main() -> None:
    n = int(sys.argv[1])
    rules = RuleSet.load(texts=["\n".join(gen_rules(300))], variables=Variables.default(),
                         classification=Classification.default())  # fmt: skip
    engine = Engine(EngineConfig(mode="ips"), rules=rules, attacks=AttackDetector())
    print(native.describe())
    for i, frame in enumerate(_frames(random.Random(11), n)):
        ts = 1_700_000_000 + i * 0.001
        p = decode(frame, ts)
        fields = (p.eth_type, p.vlan, p.ip_version, p.src, p.dst, p.proto, p.ttl, p.ip_id, p.ip_len,
                  p.frag_offset, p.is_fragment, p.sport, p.dport, p.tcp_flags, p.tcp_seq, p.tcp_ack,
                  p.tcp_win, sorted(p.tcp_options.items()), p.icmp_type, p.icmp_code, len(p.payload),
                  p.anomalies)  # fmt: skip
        r = engine.process(frame, ts)
        evs = [(e.event_type, e.data.get("alert", {}).get("signature_id"), e.timestamp)
               for e in r.events]  # fmt: skip
        print(i, fields, r.verdict.action, r.verdict.block_address, evs)
    print("stats", sorted((k, v) for k, v in engine.stats().items() if isinstance(v, int)))


if __name__ == "__main__":
    main()
