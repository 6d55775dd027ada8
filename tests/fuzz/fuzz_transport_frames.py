"""Fuzz the agent-facing frame decoder: any bytes from a guest give messages that passed
validation, or ProtocolError — never another exception, never an unbounded buffer."""

from __future__ import annotations

from vmshield.transport import protocol as p


def TestOneInput(data: bytes) -> None:
    dec = p.FrameDecoder(max_frame=64 * 1024)
    # Feed in two pieces: a split anywhere must not change what is decoded.
    cut = data[0] % (len(data) + 1) if data else 0
    try:
        msgs = dec.feed(data[:cut]) + dec.feed(data[cut:])
    except p.ProtocolError:
        return
    assert len(dec._buf) <= 4 + dec.max_frame
    for m in msgs:
        p.validate(m)  # already validated by decode: must not raise now
        assert p.FrameDecoder().feed(p.encode(m)) == [m]  # what we accepted re-encodes identically
