"""Fuzz the CHM LZX decoder and the CHM reader around it: any bytes give output of exactly the
asked length or LzxError (never another exception, never more output than asked); a CHM gives
members or LimitExceeded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import chm, lzx

OUT = 70_000  # a little over two frames: crosses a frame end and a reset (every 2 frames)


def TestOneInput(data: bytes) -> None:
    if data[:1] == b"I":  # a CHM (the seeds from fuzz_seeds("chm") lack the ITSF magic)
        check_members(chm.walk(b"ITSF" + data[1:], "a.chm", budget()))
        return
    try:
        out = lzx.decompress(data, OUT, 16, 2)
    except lzx.LzxError:
        return
    assert len(out) == OUT


def _seeds() -> list[bytes]:
    return seeds_for("lzx")() + [b"I" + s for s in seeds_for("chm")()]


if __name__ == "__main__":
    main(TestOneInput, _seeds)
