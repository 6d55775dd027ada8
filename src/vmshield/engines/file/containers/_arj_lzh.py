"""ARJ's decompressors, after the published UNARJ reference (decode.c): methods 1-3 (LZ77 with a
26 KiB window and static Huffman blocks, LHA's coder) and method 4 (ARJ "fastest")."""

from __future__ import annotations

from ..limits import LimitExceeded, ScanBudget

DDICSIZ = 26624
THRESHOLD = 3
NC = 255 + 256 + 2 - THRESHOLD  # 510 literal/length codes
NP = 16 + 1
NT = 16 + 3
CBIT, PBIT, TBIT = 9, 5, 5


class ArjDataError(Exception):
    pass


class Bits:
    """MSB-first bit reader; reads past the end as zeros (the reference does the same)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0  # in bits
        self.end = len(data) * 8

    def peek(self, n: int) -> int:
        byte = self.pos >> 3
        chunk = int.from_bytes(self.data[byte : byte + 4].ljust(4, b"\x00"), "big")
        return (chunk >> (32 - (self.pos & 7) - n)) & ((1 << n) - 1)

    def skip(self, n: int) -> None:
        self.pos += n
        if self.pos > self.end + 64:
            raise ArjDataError("read past the end of the compressed data")

    def get(self, n: int) -> int:
        if n == 0:
            return 0
        v = self.peek(n)
        self.skip(n)
        return v


def _make_table(
    nchar: int, bitlen: list[int], tablebits: int, left: list[int], right: list[int]
) -> list[int]:
    count = [0] * 17
    for i in range(nchar):
        if bitlen[i] > 16:
            raise ArjDataError("bad code length")
        count[bitlen[i]] += 1
    start = [0] * 18
    for i in range(1, 17):
        start[i + 1] = start[i] + (count[i] << (16 - i))
    if start[17] != 1 << 16:
        raise ArjDataError("bad Huffman table")
    jut = 16 - tablebits
    weight = [0] * 17
    for i in range(1, tablebits + 1):
        start[i] >>= jut
        weight[i] = 1 << (tablebits - i)
    for i in range(tablebits + 1, 17):
        weight[i] = 1 << (16 - i)
    table = [0] * (1 << tablebits)
    avail = nchar
    mask = 1 << (15 - tablebits)
    for ch in range(nchar):
        ln = bitlen[ch]
        if ln == 0:
            continue
        k = start[ln]
        nextcode = k + weight[ln]
        if ln <= tablebits:
            if nextcode > len(table):
                raise ArjDataError("bad Huffman table")
            for i in range(k, nextcode):
                table[i] = ch
        else:
            # Walk/extend the tree below the table entry; (arr, idx) stands for C's pointer.
            arr, idx = table, k >> jut
            for _ in range(ln - tablebits):
                if arr[idx] == 0:
                    if avail >= len(left):
                        raise ArjDataError("Huffman tree overflow")
                    left[avail] = right[avail] = 0
                    arr[idx] = avail
                    avail += 1
                node = arr[idx]
                arr, idx = (right, node) if k & mask else (left, node)
                k <<= 1
            arr[idx] = ch
        start[ln] = nextcode
    return table


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.b = Bits(data)
        self.left = [0] * (2 * NC - 1)
        self.right = [0] * (2 * NC - 1)
        self.pt_len = [0] * NT
        self.c_len = [0] * NC
        self.pt_table: list[int] = []
        self.c_table: list[int] = []
        self.blocksize = 0

    def read_pt_len(self, nn: int, nbit: int, i_special: int) -> None:
        b = self.b
        n = b.get(nbit)
        if n == 0:
            c = b.get(nbit)
            self.pt_len = [0] * NT
            self.pt_table = [c] * 256
            return
        if n > nn:
            raise ArjDataError("bad code-length count")
        i = 0
        pt_len = [0] * NT
        while i < n:
            c = b.peek(3)
            if c == 7:
                mask = 1 << 12
                bits = b.peek(16)
                while mask & bits:
                    mask >>= 1
                    c += 1
                    if c > 16:
                        raise ArjDataError("bad code length")
            b.skip(3 if c < 7 else c - 3)
            pt_len[i] = c
            i += 1
            if i == i_special:
                for _ in range(b.get(2)):
                    if i >= nn:
                        raise ArjDataError("bad code-length run")
                    pt_len[i] = 0
                    i += 1
        self.pt_len = pt_len
        self.pt_table = _make_table(nn, pt_len, 8, self.left, self.right)

    def _walk(self, table: list[int], tbits: int, limit: int, mask_bit: int) -> int:
        b = self.b
        bits = b.peek(16)
        j = table[bits >> (16 - tbits)]
        mask = 1 << mask_bit
        guard = 0
        while j >= limit:
            j = self.right[j] if bits & mask else self.left[j]
            mask >>= 1
            guard += 1
            if guard > 16:
                raise ArjDataError("bad Huffman code")
        return j

    def read_c_len(self) -> None:
        b = self.b
        n = b.get(CBIT)
        if n == 0:
            c = b.get(CBIT)
            self.c_len = [0] * NC
            self.c_table = [c] * 4096
            return
        if n > NC:
            raise ArjDataError("bad literal-code count")
        c_len = [0] * NC
        i = 0
        while i < n:
            c = self._walk(self.pt_table, 8, NT, 7)
            b.skip(self.pt_len[c])
            if c <= 2:
                if c == 0:
                    c = 1
                elif c == 1:
                    c = b.get(4) + 3
                else:
                    c = b.get(CBIT) + 20
                if i + c > NC:
                    raise ArjDataError("bad code-length run")
                i += c
            else:
                c_len[i] = c - 2
                i += 1
        self.c_len = c_len
        self.c_table = _make_table(NC, c_len, 12, self.left, self.right)

    def decode_c(self) -> int:
        b = self.b
        if self.blocksize == 0:
            self.blocksize = b.get(16)
            self.read_pt_len(NT, TBIT, 3)
            self.read_c_len()
            self.read_pt_len(NP, PBIT, -1)
        self.blocksize -= 1
        j = self._walk(self.c_table, 12, NC, 3)
        b.skip(self.c_len[j])
        return j

    def decode_p(self) -> int:
        j = self._walk(self.pt_table, 8, NP, 7)
        self.b.skip(self.pt_len[j])
        if j != 0:
            j -= 1
            j = (1 << j) + self.b.get(j)
        return j


def _copy(out: bytearray, dist: int, length: int) -> None:
    start = len(out) - dist - 1
    if start < 0:
        # Before the start of output the reference window holds zeros.
        pad = min(-start, length)
        out += b"\x00" * pad
        length -= pad
        start = len(out) - dist - 1
    for k in range(length):
        out.append(out[start + k])


def decode(data: bytes, orig: int, budget: ScanBudget) -> tuple[bytes, str | None]:
    d = _Decoder(data)
    out = bytearray()
    try:
        while len(out) < orig:
            c = d.decode_c()
            if c <= 255:
                out.append(c)
            else:
                length = c - (256 - THRESHOLD)
                dist = d.decode_p()
                if dist >= DDICSIZ:
                    raise ArjDataError("match distance outside the window")
                _copy(out, dist, length)
            if len(out) & 0xFFFF < 4:
                budget.check_time()
    except (ArjDataError, IndexError) as exc:
        return bytes(out[:orig]), f"corrupt ARJ data: {exc}"
    if len(out) > orig + 256:
        raise LimitExceeded("max_file_size", "ARJ member expands past its declared size")
    return bytes(out[:orig]), None


def _unary(b: Bits, start: int, stop: int) -> int:
    plus, pwr, width = 0, 1 << start, start
    while width < stop:
        if b.get(1) == 0:
            break
        plus += pwr
        pwr <<= 1
        width += 1
    return b.get(width) + plus


def decode_fastest(data: bytes, orig: int, budget: ScanBudget) -> tuple[bytes, str | None]:
    b = Bits(data)
    out = bytearray()
    try:
        while len(out) < orig:
            c = _unary(b, 0, 7)
            if c == 0:
                out.append(b.get(8))
            else:
                length = c - 1 + THRESHOLD
                dist = _unary(b, 9, 13)
                _copy(out, dist, length)
            if len(out) & 0xFFFF < 4:
                budget.check_time()
    except ArjDataError as exc:
        return bytes(out[:orig]), f"corrupt ARJ data: {exc}"
    return bytes(out[:orig]), None
