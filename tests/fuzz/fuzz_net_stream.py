"""Fuzz TCP reassembly: segments (seq, flags, data) from the input; check bounds and ordering."""

from __future__ import annotations

import struct

from tests.fuzz._harness import main
from vmshield.engines.net.stream import StreamDir, StreamMemory


def TestOneInput(data: bytes) -> None:
    mem = StreamMemory(4096)
    s = StreamDir(8192, mem, max_segments=16)
    delivered = 0
    i = 0
    while i + 6 <= len(data):
        seq, flags, ln = struct.unpack_from("!IBB", data, i)
        i += 6
        seg = data[i : i + ln]
        i += ln
        ev: list[str] = []
        out = s.add(seq, flags, seg, ev)
        delivered += len(out)
        assert delivered == s.delivered or s.done
        assert delivered <= 8192
        assert 0 <= mem.used <= 4096
        assert len(s.pending) <= 16
    s.release()
    assert mem.used == 0


if __name__ == "__main__":
    main(TestOneInput)
