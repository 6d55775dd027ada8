"""Fuzz the packet decoder and the whole engine pipeline: any bytes, any link type, no exception."""

from __future__ import annotations

from tests.fuzz._harness import main
from vmshield.engines.net.decode import decode
from vmshield.engines.net.engine import Engine

_engine = Engine()
_LINKTYPES = (1, 101, 113, 228, 229, 0)


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    lt = _LINKTYPES[data[0] % len(_LINKTYPES)]
    frame = data[1:]
    p = decode(frame, 1.0, lt)
    assert isinstance(p.anomalies, tuple)
    # Through the full pipeline too (flows, streams, app layer), with the engine's state kept
    # across inputs so that sequences of packets are exercised.
    _engine.process(frame, 1.0, linktype=lt)


if __name__ == "__main__":
    main(TestOneInput)
