"""LZX decompression as CHM uses it (the MS-CAB LZX variant, frames of 32 KiB, the decoder state
reset every `reset_interval` frames), written from the format's description and libmspack's
lzxd.c behaviour: verbatim, aligned-offset and uncompressed blocks, repeated offsets R0-R2, the
Intel E8 call translation.

Hostile input is expected: every length is checked against the data and the output cap, an
invalid Huffman tree or a reference before the start of the output is an `LzxError`, and the
caller's `tick` (the scan budget's time check) runs once per frame.
"""

from __future__ import annotations

from collections.abc import Callable

FRAME = 0x8000
MIN_MATCH = 2
NUM_CHARS = 256
PRETREE_SYMS = 20
LENGTH_SYMS = 249
ALIGNED_SYMS = 8
MAX_CODE_LEN = 16

# Position slots per window size (2^15 .. 2^21).
POSITION_SLOTS = {15: 30, 16: 32, 17: 34, 18: 36, 19: 38, 20: 42, 21: 50}

EXTRA_BITS: list[int] = []
POSITION_BASE: list[int] = []
_b = 0
for _i in range(51):
    _e = 0 if _i < 4 else min((_i - 2) >> 1, 17)
    EXTRA_BITS.append(_e)
    POSITION_BASE.append(_b)
    _b += 1 << _e
del _b, _i, _e

VERBATIM, ALIGNED, UNCOMPRESSED = 1, 2, 3


class LzxError(Exception):
    pass


# Codes up to this length decode with one table lookup; longer ones (rare) through a dict. The
# table stays 2^10 entries, so a hostile stream of many tiny blocks with 16-bit codes cannot make
# each tree cost a 65 536-entry build.
FAST_BITS = 10

Tree = tuple[list[int], int, dict[tuple[int, int], int], int]  # table, its bits, long codes, max


def _table(lens: list[int], what: str) -> Tree | None:
    """Canonical Huffman decoding table: index by the next `bits` bits, entry symbol<<5|len, or
    -1 when the code is longer (looked up in the dict by (length, code)). None for a tree with no
    symbols (allowed while unused, as libmspack allows it)."""
    maxlen = max(lens, default=0)
    if maxlen == 0:
        return None
    if maxlen > MAX_CODE_LEN:
        raise LzxError(f"{what} tree: code length {maxlen}")
    if sum(1 << (maxlen - ln) for ln in lens if ln) != 1 << maxlen:
        raise LzxError(f"{what} tree is incomplete or over-subscribed")
    bits = min(maxlen, FAST_BITS)
    table = [-1] * (1 << bits)
    long: dict[tuple[int, int], int] = {}
    code = 0
    for length in range(1, maxlen + 1):
        for sym, ln in enumerate(lens):
            if ln != length:
                continue
            if length <= bits:
                span = 1 << (bits - length)
                start = code << (bits - length)
                table[start : start + span] = [sym << 5 | length] * span
            else:
                long[(length, code)] = sym
            code += 1
        code <<= 1
    return table, bits, long, maxlen


class _Bits:
    """LZX bit stream: 16-bit little-endian words, each read from its most significant bit."""

    def __init__(self, data: bytes) -> None:
        n = len(data) & ~1
        sw = bytearray(n)
        sw[0::2] = data[1:n:2]
        sw[1::2] = data[0:n:2]
        self.raw = data
        self.sw = bytes(sw) + b"\x00" * 8  # reads past the end see zeros; checked in `over`
        self.end = n * 8
        self.pos = 0

    def over(self) -> bool:
        return self.pos > self.end

    def read(self, n: int) -> int:
        if n == 0:
            return 0
        p = self.pos
        word = int.from_bytes(self.sw[p >> 3 : (p >> 3) + 4], "big")
        self.pos = p + n
        return (word >> (32 - (p & 7) - n)) & ((1 << n) - 1)

    def sym(self, tab: Tree | None, what: str) -> int:
        if tab is None:
            raise LzxError(f"{what} tree used but empty")
        table, bits, long, maxlen = tab
        p = self.pos
        word = int.from_bytes(self.sw[p >> 3 : (p >> 3) + 4], "big")
        e = table[(word >> (32 - (p & 7) - bits)) & ((1 << bits) - 1)]
        if e >= 0:
            self.pos = p + (e & 31)
            return e >> 5
        for length in range(bits + 1, maxlen + 1):
            sym = long.get((length, (word >> (32 - (p & 7) - length)) & ((1 << length) - 1)))
            if sym is not None:
                self.pos = p + length
                return sym
        raise LzxError(f"{what} tree: no code matches")  # unreachable for a complete tree

    def align(self) -> None:
        self.pos = (self.pos + 15) & ~15


def decompress(
    data: bytes,
    out_len: int,
    window_bits: int,
    reset_frames: int,
    tick: Callable[[], None] = lambda: None,
) -> bytes:
    """Decompress `out_len` bytes of a CHM LZX stream. `reset_frames`: frames between decoder
    resets (0: never)."""
    if window_bits not in POSITION_SLOTS:
        raise LzxError(f"window of 2^{window_bits} bytes is not an LZX window")
    window = 1 << window_bits
    main_syms = NUM_CHARS + POSITION_SLOTS[window_bits] * 8
    bits = _Bits(data)
    out = bytearray()
    final = bytearray()
    frame = 0
    main_lens = [0] * main_syms
    len_lens = [0] * LENGTH_SYMS
    main_t: Tree | None = None
    len_t: Tree | None = None
    aligned_t: Tree | None = None
    r0 = r1 = r2 = 1
    header_read = False
    intel_size = 0
    block_type = 0
    block_len = remaining = 0

    def read_lens(lens: list[int], first: int, last: int) -> None:
        pre = [bits.read(4) for _ in range(PRETREE_SYMS)]
        pt = _table(pre, "pretree")
        x = first
        while x < last:
            z = bits.sym(pt, "pretree")
            if z == 17:
                run, val = bits.read(4) + 4, 0
            elif z == 18:
                run, val = bits.read(5) + 20, 0
            elif z == 19:
                run = bits.read(1) + 4
                z = bits.sym(pt, "pretree")
                val = (lens[x] - z) % 17
            else:
                run, val = 1, (lens[x] - z) % 17
            if x + run > last:
                raise LzxError("code length run past the end of its tree")
            lens[x : x + run] = [val] * run
            x += run

    while len(out) < out_len:
        tick()
        if reset_frames and frame % reset_frames == 0:
            main_lens = [0] * main_syms
            len_lens = [0] * LENGTH_SYMS
            r0 = r1 = r2 = 1
            header_read = False
            block_type = 0
            remaining = 0
        if not header_read:
            intel_size = (bits.read(16) << 16 | bits.read(16)) if bits.read(1) else 0
            header_read = True
        frame_start = len(out)
        frame_end = min(frame_start + FRAME, out_len)
        while len(out) < frame_end:
            if remaining == 0:
                tick()  # per block too: a stream of tiny blocks must not outrun the budget
                if block_type == UNCOMPRESSED and block_len & 1:
                    bits.pos += 8  # an odd-length stored block is padded to a word
                block_type = bits.read(3)
                block_len = remaining = bits.read(16) << 8 | bits.read(8)
                if block_type in (VERBATIM, ALIGNED):
                    if block_type == ALIGNED:
                        aligned_t = _table([bits.read(3) for _ in range(8)], "aligned")
                    read_lens(main_lens, 0, NUM_CHARS)
                    read_lens(main_lens, NUM_CHARS, main_syms)
                    main_t = _table(main_lens, "main")
                    if main_t is None:
                        raise LzxError("empty main tree")
                    read_lens(len_lens, 0, LENGTH_SYMS)
                    len_t = _table(len_lens, "length")
                elif block_type == UNCOMPRESSED:
                    # 1-16 bits of padding to the next word, then R0-R2 as bytes.
                    bits.pos = bits.pos + 16 if bits.pos % 16 == 0 else (bits.pos + 15) & ~15
                    at = bits.pos >> 3
                    if at + 12 > len(data):
                        raise LzxError("truncated stored block header")
                    r0, r1, r2 = (
                        int.from_bytes(data[at + i : at + i + 4], "little") for i in (0, 4, 8)
                    )
                    bits.pos += 96
                else:
                    raise LzxError(f"bad block type {block_type}")
                if remaining == 0:
                    raise LzxError("empty block")
            if block_type == UNCOMPRESSED:
                n = min(remaining, frame_end - len(out))
                at = bits.pos >> 3
                if at + n > len(data):
                    raise LzxError("truncated stored block")
                out += data[at : at + n]
                bits.pos += n * 8
                remaining -= n
                continue
            # Verbatim / aligned: symbols until this block or this frame is done. A match may
            # not run past either (libmspack refuses it too).
            limit = min(frame_end, len(out) + remaining)
            start = len(out)
            while len(out) < limit:
                sym = bits.sym(main_t, "main")
                if sym < NUM_CHARS:
                    out.append(sym)
                    continue
                sym -= NUM_CHARS
                mlen = sym & 7
                if mlen == 7:
                    mlen += bits.sym(len_t, "length")
                mlen += MIN_MATCH
                slot = sym >> 3
                if slot > 2:
                    extra = EXTRA_BITS[slot]
                    off = POSITION_BASE[slot] - 2
                    if block_type == ALIGNED and extra >= 3:
                        off += (bits.read(extra - 3) << 3) + bits.sym(aligned_t, "aligned")
                    else:
                        off += bits.read(extra)
                    r2, r1, r0 = r1, r0, off
                elif slot == 0:
                    off = r0
                elif slot == 1:
                    off, r1, r0 = r1, r0, r1
                else:
                    off, r2, r0 = r2, r0, r2
                if off <= 0 or off > len(out) or off > window:
                    raise LzxError(f"match offset {off} before the start of the data")
                if len(out) + mlen > frame_end:
                    raise LzxError("match runs past the end of its frame")
                src = len(out) - off
                if off >= mlen:
                    out += out[src : src + mlen]
                else:  # overlapping copy repeats the last `off` bytes
                    chunk = out[src:]
                    out += (chunk * (mlen // off + 1))[:mlen]
            used = len(out) - start
            if used > remaining:
                raise LzxError("match runs past the end of its block")
            remaining -= used
            if bits.over():
                raise LzxError("compressed data ends early")
        if bits.over():
            raise LzxError("compressed data ends early")
        piece = out[frame_start:frame_end]
        if intel_size and len(piece) > 10 and frame < 32768:
            piece = _e8(piece, frame_start, intel_size)
        final += piece
        frame += 1
        # Each frame ends on a word boundary. Not inside a stored block: its bytes are read as
        # bytes, and an odd one's pad byte is skipped before the next block header instead.
        if block_type != UNCOMPRESSED and bits.pos % 16:
            bits.align()
    return bytes(final)


def _e8(piece: bytearray, curpos: int, size: int) -> bytearray:
    """Undo the encoder's translation of x86 CALL targets to absolute offsets."""
    i, end = 0, len(piece) - 10
    while True:
        i = piece.find(0xE8, i, end)  # jump between E8 bytes: the bytes in between stay
        if i < 0:
            break
        absolute = int.from_bytes(piece[i + 1 : i + 5], "little", signed=True)
        pos = curpos + i
        if -pos <= absolute < size:
            rel = absolute - pos if absolute >= 0 else absolute + size
            piece[i + 1 : i + 5] = (rel & 0xFFFFFFFF).to_bytes(4, "little")
        i += 5
    return piece
