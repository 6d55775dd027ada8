"""Fuzz the attack detector with arbitrary frames (decoded and defragmented as the engine does):
it never raises and its state stays within its caps."""

from __future__ import annotations

import sys

try:  # coverage feedback when atheris is there; plain import otherwise
    import atheris

    with atheris.instrument_imports(include=["vmshield.engines.net.attacks"]):
        from vmshield.engines.net.attacks import AttackConfig, AttackDetector
except ImportError:
    from vmshield.engines.net.attacks import AttackConfig, AttackDetector

from vmshield.engines.net.decode import decode
from vmshield.engines.net.defrag import Defragmenter

_CFG = AttackConfig(max_sources=64, max_flows=64)
_det = AttackDetector(_CFG)
_defrag = Defragmenter()
_ts = [1_700_000_000.0]


def TestOneInput(data: bytes) -> None:
    # First byte: time step and link type, the rest one or more frames split on a marker.
    if not data:
        return
    step = (data[0] & 0x0F) * 0.01
    linktype = 101 if data[0] & 0x80 else 1
    for chunk in data[1:].split(b"\xfe\xfe"):
        _ts[0] += step
        p = decode(chunk, _ts[0], linktype)
        whole = _defrag.add(p) if p.is_fragment else None
        _det.process(p)
        if whole is not None:
            _det.process(whole)
    assert _det.memory_entries() <= 13 * 64


def main() -> None:
    import atheris

    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
