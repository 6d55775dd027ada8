"""Fuzz the defragmenter: a sequence of IPv4/IPv6 fragments built from the input."""

from __future__ import annotations

import struct

from tests.fuzz._harness import main
from vmshield.engines.net.decode import LINKTYPE_RAW, decode
from vmshield.engines.net.defrag import Defragmenter


def _frag4(ipid: int, off: int, mf: bool, payload: bytes) -> bytes:
    fw = (off & 0x1FFF) | (0x2000 if mf else 0)
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ipid, fw, 64, 17, 0, b"\n\0\0\1", b"\n\0\0\2")
        + payload
    )  # fmt: skip


def _frag6(ipid: int, off: int, mf: bool, payload: bytes) -> bytes:
    fh = struct.pack("!BBHI", 17, 0, ((off & 0x1FFF) << 3) | int(mf), ipid)
    return struct.pack("!IHBB16s16s", 6 << 28, 8 + len(payload), 44, 64, b"\x20" + bytes(15), b"\x20" + bytes(14) + b"\2") + fh + payload  # fmt: skip


def TestOneInput(data: bytes) -> None:
    d = Defragmenter(memcap=64 * 1024, max_trackers=64, max_frags=32)
    i = 0
    ts = 0.0
    while i + 5 <= len(data):
        ctl, ipid, off, ln = (
            data[i],
            data[i + 1] % 4,
            struct.unpack_from("!H", data, i + 2)[0],
            data[i + 4],
        )
        i += 5
        payload = data[i : i + ln]
        i += ln
        ts += (ctl & 0x0F) * 5.0
        build = _frag6 if ctl & 0x40 else _frag4
        p = decode(build(ipid, off, bool(ctl & 0x80), payload), ts, LINKTYPE_RAW)
        if p.is_fragment:
            out = d.add(p)
            if out is not None:
                assert len(out.raw) <= 65535 + 40 + 60
        d.expire(ts)
        assert d.held <= 64 * 1024 + 256
        assert d.held >= 0


if __name__ == "__main__":
    main(TestOneInput)
