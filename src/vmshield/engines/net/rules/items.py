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
class DatasetOp:
    op: str  # isset | isnotset | set | unset
    name: str


@dataclass(slots=True)
class UInt:
    """Suricata's generic unsigned comparison: N, <N, >N, <=N, >=N, !N, A<>B (exclusive), A-B."""

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
        return self.a < v < self.b


_UINT = re.compile(r"^\s*(<=|>=|!=|<|>|=|!)?\s*(\w+)\s*(?:(<>|-)\s*(\w+))?\s*$")


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
    m = _UINT.match(s)
    if not m:
        raise ValueError(f"bad {what} value '{s}'")
    op, a_s, rng, b_s = m.groups()
    a = parse_int(a_s, what)
    if rng:
        if op:
            raise ValueError(f"bad {what} value '{s}'")
        b = parse_int(b_s, what)
        if not (0 <= a < b <= maxv):
            raise ValueError(f"bad {what} range '{s}'")
        return UInt("<>", a, b)
    if not 0 <= a <= maxv:
        raise ValueError(f"{what} value out of range '{s}'")
    mode = {None: "=", "=": "=", "!": "!=", "!=": "!="}.get(op, op)
    return UInt(mode, a)
