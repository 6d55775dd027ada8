"""Attack detector cost: decoded packets per CPU second through `AttackDetector.process`.

    .venv/bin/python bench/attacks.py [--packets 300000]

The traffic is generated (frames patched from a few templates): TCP sessions, DNS queries and
answers, pings, plus a port scan, a SYN flood and a UDP flood; decoding is done before timing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from vmshield.engines.net.attacks import AttackDetector
from vmshield.engines.net.decode import decode


def _frames(n: int, rng: random.Random) -> list[bytes]:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    t = {
        "syn": bytes(eth / IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=1, dport=443, flags="S")),
        "synack": bytes(
            eth / IP(src="10.2.0.1", dst="10.1.0.1") / TCP(sport=443, dport=1, flags="SA")
        ),
        "data": bytes(
            eth
            / IP(src="10.2.0.1", dst="10.1.0.1")
            / TCP(sport=443, dport=1, flags="A")
            / Raw(b"d" * 1400)
        ),
        "ack": bytes(eth / IP(src="10.1.0.1", dst="10.2.0.1") / TCP(sport=1, dport=443, flags="A")),
        "dnsq": bytes(
            eth / IP(src="10.1.0.1", dst="10.0.0.53") / UDP(sport=1, dport=53) / Raw(b"q" * 30)
        ),
        "dnsa": bytes(
            eth / IP(src="10.0.0.53", dst="10.1.0.1") / UDP(sport=53, dport=1) / Raw(b"a" * 90)
        ),
        "ping": bytes(eth / IP(src="10.1.0.1", dst="10.2.0.9") / ICMP(type=8)),
    }
    out: list[bytes] = []
    while len(out) < n:
        client = bytes([10, 1, rng.randrange(256), rng.randrange(1, 255)])
        server = bytes([10, 2, rng.randrange(256), rng.randrange(1, 255)])
        port = rng.randrange(1024, 65535).to_bytes(2, "big")

        def mk(name: str, src: bytes, dst: bytes, sport_at: int, port: bytes = port) -> bytes:
            b = bytearray(t[name])
            b[26:30], b[30:34] = src, dst
            b[sport_at : sport_at + 2] = port
            return bytes(b)

        kind = rng.random()
        if kind < 0.6:  # a TCP session with 10 data packets
            out += [
                mk("syn", client, server, 34),
                mk("synack", server, client, 36),
                mk("ack", client, server, 34),
            ]
            for _ in range(10):
                out += [mk("data", server, client, 36), mk("ack", client, server, 34)]
        elif kind < 0.9:
            out += [
                mk("dnsq", client, b"\x0a\x00\x00\x35", 34),
                mk("dnsa", b"\x0a\x00\x00\x35", client, 36),
            ]
        elif kind < 0.99:
            out.append(mk("ping", client, server, 40))
        else:  # an attack burst: a port scan
            for p in range(1, 200):
                b = bytearray(t["syn"])
                b[26:30], b[30:34] = client, server
                b[36:38] = p.to_bytes(2, "big")
                out.append(bytes(b))
    return out[:n]


def run(packets: int = 300_000, seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    frames = _frames(packets, rng)
    decoded = []
    ts = 1_700_000_000.0
    for f in frames:
        decoded.append(decode(f, ts))
        ts += 0.00001  # 100 000 packets/s of capture time
    det = AttackDetector()
    t0 = time.process_time()
    events: dict[str, int] = {}
    for p in decoded:
        for v in det.process(p):
            if v.event is not None:
                events[v.name] = events.get(v.name, 0) + 1
    cpu = time.process_time() - t0
    return {
        "packets": float(len(decoded)),
        "packets_per_cpu_s": len(decoded) / cpu,
        **{f"events {k}": float(n) for k, n in sorted(events.items())},
        "state_entries": float(det.memory_entries()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=300_000)
    args = ap.parse_args(argv)
    for k, v in run(args.packets).items():
        print(f"  {k:20} {v:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
