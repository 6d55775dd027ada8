"""Fuzz the attack detector with arbitrary frames (decoded and defragmented as the engine does):
it never raises and its state stays within its caps."""

from __future__ import annotations

from tests.fuzz._harness import main
from vmshield.engines.net.attacks import AttackConfig, AttackDetector
from vmshield.engines.net.decode import decode
from vmshield.engines.net.defrag import Defragmenter

_CFG = AttackConfig(max_sources=64, max_flows=64)
_det = AttackDetector(_CFG)
_defrag = Defragmenter()
_ts = [1_700_000_000.0]


def _structured(data: bytes) -> list[bytes]:
    """Raw IPv4 datagrams built from 12-byte records, so most inputs reach the detectors:
    addresses in a small space (so counters fill up), any flags, ports, fragment fields."""
    out = []
    for i in range(0, len(data) - 11, 12):
        r = data[i : i + 12]
        proto = (1, 6, 17, r[0])[r[1] & 3]
        src = bytes([10, 0, r[2] & 3, r[3] & 7])
        dst = bytes([10, 0, r[4] & 3, r[5] & 7]) if r[4] != 0xFF else b"\xff\xff\xff\xff"
        frag = int.from_bytes(r[6:8], "big") if r[1] & 4 else 0
        if proto == 6:
            l4 = r[8:10] + r[10:12] + bytes(8) + bytes([0x50, r[0]]) + bytes(6)
        elif proto == 17:
            l4 = r[8:10] + r[10:12] + b"\x00\x08\x00\x00"
        else:
            l4 = bytes([r[8] & 0x1F, r[9], 0, 0]) + r[10:12] + b"\x00\x00"
        total = 20 + len(l4)
        hdr = bytes([0x45, 0]) + total.to_bytes(2, "big") + r[6:8] + frag.to_bytes(2, "big")
        out.append(hdr + bytes([64, proto, 0, 0]) + src + dst + l4)
    return out


def TestOneInput(data: bytes) -> None:
    # First byte: time step and mode (frames split on a marker, or structured records).
    if not data:
        return
    step = (data[0] & 0x0F) * 0.01
    linktype = 101 if data[0] & 0x80 else 1
    if data[0] & 0x40:
        chunks, linktype = _structured(data[1:]), 101
    else:
        chunks = data[1:].split(b"\xfe\xfe")
    for chunk in chunks:
        _ts[0] += step
        p = decode(chunk, _ts[0], linktype)
        whole = _defrag.add(p) if p.is_fragment else None
        _det.process(p)
        if whole is not None:
            _det.process(whole)
    assert _det.memory_entries() <= 14 * 64


if __name__ == "__main__":
    main(TestOneInput)
