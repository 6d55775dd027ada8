"""Detection items of a rule: one per payload keyword, in rule order, grouped by buffer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# A value that is a number or the name of a byte_extract / byte_math variable.
IntOrVar = int | str


@dataclass(slots=True)
class Content:
    pattern: bytes
    nocase: bool = False
    negated: bool = False
    offset: IntOrVar | None = None
    depth: IntOrVar | None = None
    distance: IntOrVar | None = None
    within: IntOrVar | None = None
    startswith: bool = False
    endswith: bool = False
    fast_pattern: bool = False
    fp_chop: tuple[int, int] | None = None
    relative_next: bool = False
    lpattern: bytes = b""

    @property
    def relative(self) -> bool:
        return self.distance is not None or self.within is not None


@dataclass(slots=True)
class Pcre:
    regex: Any  # a compiled `regex` pattern
    source: str
    negated: bool = False
    relative: bool = False
    anchored: bool = False
    relative_next: bool = False


@dataclass(slots=True)
class ByteOpts:
    nbytes: int
    offset: IntOrVar
    relative: bool = False
    little: bool = False
    string_base: int = 0  # 0: binary; else 8/10/16
    bitmask: int | None = None
    nbytes_var: str | None = None  # byte count taken from a byte_extract/byte_math variable


@dataclass(slots=True)
class ByteTest:
    o: ByteOpts
    op: str
    negated: bool
    value: IntOrVar


@dataclass(slots=True)
class ByteJump:
    o: ByteOpts
    multiplier: int = 1
    align: bool = False
    from_beginning: bool = False
    from_end: bool = False
    post_offset: int = 0


@dataclass(slots=True)
class ByteExtract:
    o: ByteOpts
    name: str
    multiplier: int = 1
    align: int = 0


@dataclass(slots=True)
class ByteMath:
    o: ByteOpts
    oper: str
    rvalue: IntOrVar
    result: str


@dataclass(slots=True)
class IsDataAt:
    at: IntOrVar
    negated: bool = False
    relative: bool = False


@dataclass(slots=True)
class BufSize:
    """bsize / urilen: the length of the whole buffer."""

    test: UInt


@dataclass(slots=True)
class Base64Decode:
    """base64_decode: decode part of the buffer; the rule's base64_data keywords inspect it."""

    nbytes: int = 0  # 0: to the end of the buffer (capped at 64 KiB)
    offset: int = 0
    relative: bool = False
    data_items: list[Any] | None = None  # the base64_data list, attached at rule end


@dataclass(slots=True)
class DatasetOp:
    op: str  # isset | isnotset | set | unset
    name: str


@dataclass(slots=True)
class UInt:
    """Suricata's integer keyword comparison (rules/integer-keywords): N, =N, !N, !=N, >N, >=N,
    <N, <=N, ranges A-B or A<>B (exclusive), negated ranges !A-B, bitmasks &M=V and &M!=V."""

    mode: str
    a: int
    b: int = 0

    def __call__(self, v: int) -> bool:
        m = self.mode
        if m == "=":
            return v == self.a
        if m == "<":
            return v < self.a
        if m == ">":
            return v > self.a
        if m == "<=":
            return v <= self.a
        if m == ">=":
            return v >= self.a
        if m == "!=":
            return v != self.a
        if m == "!<>":
            return v <= self.a or v >= self.b
        if m == "&=":
            return v & self.a == self.b
        if m == "&!=":
            return v & self.a != self.b
        return self.a < v < self.b


_UNITS = {"kb": 1024, "kib": 1024, "mb": 1 << 20, "mib": 1 << 20, "gb": 1 << 30, "gib": 1 << 30}
_NUM = r"(?:0[xX][0-9a-fA-F]+|\d+)(?:[kKmMgG][iI]?[bB])?"
_UINT = re.compile(rf"^\s*(<=|>=|!=|<|>|=|!)?\s*({_NUM})\s*(?:(<>|-)\s*({_NUM}))?\s*$")
_UMASK = re.compile(rf"^\s*&\s*({_NUM})\s*(=|!=)\s*({_NUM})\s*$")


def _unum(s: str, what: str) -> int:
    s = s.strip()
    low = s.lower()
    for u, mult in _UNITS.items():
        if low.endswith(u) and not low.startswith("0x"):
            return parse_int(s[: -len(u)], what) * mult
    return parse_int(s, what)


def parse_int(s: str, what: str = "number") -> int:
    s = s.strip()
    try:
        if s.lower().startswith("0x"):
            return int(s, 16)
        if s.startswith("-") or s.isdigit():
            return int(s, 10)
    except ValueError:
        pass
    raise ValueError(f"bad {what} '{s}'")


def parse_uint(s: str, maxv: int, what: str) -> UInt:
    mm = _UMASK.match(s)
    if mm:
        mask, op, val = _unum(mm.group(1), what), mm.group(2), _unum(mm.group(3), what)
        if mask > maxv or val > maxv:
            raise ValueError(f"{what} value out of range '{s}'")
        if val & ~mask:
            raise ValueError(f"{what} bitmask '{s}' can never match")
        return UInt("&=" if op == "=" else "&!=", mask, val)
    m = _UINT.match(s)
    if not m:
        raise ValueError(f"bad {what} value '{s}'")
    op, a_s, rng, b_s = m.groups()
    a = _unum(a_s, what)
    if rng:
        if op not in (None, "!"):
            raise ValueError(f"bad {what} value '{s}'")
        b = _unum(b_s, what)
        if not (0 <= a < b <= maxv):
            raise ValueError(f"bad {what} range '{s}'")
        return UInt("!<>" if op == "!" else "<>", a, b)
    if not 0 <= a <= maxv:
        raise ValueError(f"{what} value out of range '{s}'")
    mode = {None: "=", "=": "=", "!": "!=", "!=": "!="}.get(op, op)
    return UInt(mode, a)
