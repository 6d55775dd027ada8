"""UCL's NRV2B, NRV2D and NRV2E decompressors (the LE32 bit order UPX uses), after UCL's
n2b_d.c / n2d_d.c / n2e_d.c. Output is bounded by `limit`; bad input raises NrvError."""

from __future__ import annotations

from collections.abc import Callable

Tick = Callable[[], None]


def _no_tick() -> None:
    return None


class NrvError(Exception):
    pass


class _Bits:
    __slots__ = ("src", "pos", "bb", "bc")

    def __init__(self, src: bytes) -> None:
        self.src = src
        self.pos = 0
        self.bb = 0
        self.bc = 0

    def bit(self) -> int:
        # 32-bit little-endian words, consumed from the most significant bit.
        if self.bc == 0:
            if self.pos + 4 > len(self.src):
                raise NrvError("input ends inside a bit word")
            self.bb = int.from_bytes(self.src[self.pos : self.pos + 4], "little")
            self.pos += 4
            self.bc = 32
        self.bc -= 1
        return (self.bb >> self.bc) & 1

    def byte(self) -> int:
        if self.pos >= len(self.src):
            raise NrvError("input ends inside a literal")
        b = self.src[self.pos]
        self.pos += 1
        return b


def _copy(out: bytearray, off: int, n: int, limit: int) -> None:
    if off > len(out) or off <= 0:
        raise NrvError(f"match offset {off} outside the output ({len(out)} bytes)")
    if len(out) + n > limit:
        raise NrvError("output larger than declared")
    start = len(out) - off
    if off >= n:
        out += out[start : start + n]
    else:
        for k in range(n):
            out.append(out[start + k])


def _gamma11(b: _Bits) -> int:
    v = 1
    while True:
        v = v * 2 + b.bit()
        if v > 0xFFFFFFFF:
            raise NrvError("gamma code too long")
        if b.bit():
            return v


def _gamma12(b: _Bits) -> int:
    v = 1
    while True:
        v = v * 2 + b.bit()
        if b.bit():
            return v
        v = (v - 1) * 2 + b.bit()
        if v > 0xFFFFFFFF:
            raise NrvError("gamma code too long")


def _literals(b: _Bits, out: bytearray, limit: int) -> None:
    while b.bit():
        if len(out) >= limit:
            raise NrvError("output larger than declared")
        out.append(b.byte())


def nrv2b(src: bytes, limit: int, tick: Tick = _no_tick) -> bytes:
    b, out, last = _Bits(src), bytearray(), 1
    mark = 0
    while True:
        if len(out) - mark > 1 << 16:  # pure Python: let the scan's time limit interrupt it
            mark = len(out)
            tick()
        _literals(b, out, limit)
        m_off = _gamma11(b)
        if m_off == 2:
            m_off = last
        else:
            m_off = ((m_off - 3) * 256 + b.byte()) & 0xFFFFFFFF
            if m_off == 0xFFFFFFFF:
                return bytes(out)
            m_off += 1
            last = m_off
        m_len = b.bit() * 2 + b.bit()
        if m_len == 0:
            m_len = _gamma11(b) + 2
        m_len += m_off > 0xD00
        _copy(out, m_off, m_len + 1, limit)


def _nrv2de(src: bytes, limit: int, e: bool, tick: Tick = _no_tick) -> bytes:
    b, out, last = _Bits(src), bytearray(), 1
    mark = 0
    while True:
        if len(out) - mark > 1 << 16:
            mark = len(out)
            tick()
        _literals(b, out, limit)
        m_off = _gamma12(b)
        if m_off == 2:
            m_off = last
            m_len = b.bit()
        else:
            m_off = ((m_off - 3) * 256 + b.byte()) & 0xFFFFFFFF
            if m_off == 0xFFFFFFFF:
                return bytes(out)
            m_len = (m_off ^ 0xFFFFFFFF) & 1
            m_off = (m_off >> 1) + 1
            last = m_off
        if e:
            if m_len:
                m_len = 1 + b.bit()
            elif b.bit():
                m_len = 3 + b.bit()
            else:
                m_len = _gamma11(b) + 3
        else:
            m_len = m_len * 2 + b.bit()
            if m_len == 0:
                m_len = _gamma11(b) + 2
        m_len += m_off > 0x500
        _copy(out, m_off, m_len + 1, limit)


def nrv2d(src: bytes, limit: int, tick: Tick = _no_tick) -> bytes:
    return _nrv2de(src, limit, False, tick)


def nrv2e(src: bytes, limit: int, tick: Tick = _no_tick) -> bytes:
    return _nrv2de(src, limit, True, tick)


# UPX method numbers (src/conf.h): the LE32 variants.
METHODS: dict[int, Callable[[bytes, int, Tick], bytes]] = {2: nrv2b, 5: nrv2d, 8: nrv2e}
