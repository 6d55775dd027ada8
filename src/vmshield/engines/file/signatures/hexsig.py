"""ClamAV body-signature hex patterns: parse once, then emit a Python regex and a literal anchor.

Grammar (BodySignatureFormat.md): hex bytes, `??`, nibbles `a?` / `?a`, `*`, `{n}`, `{-n}`, `{n-}`,
`{n-m}`, anchored `[n-m]`, alternatives `(aa|bbcc|d?)` and negated `!(aa|bb)`, character classes
`(B)` word boundary, `(L)` line boundary, `(W)` non-alphanumeric byte.

The anchor (the longest run of fixed bytes) is what Hyperscan searches for; the regex is what
verifies a candidate, so wildcards never enter the multi-pattern automaton.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SIG_HEX = 64 * 1024  # a body signature longer than this is refused rather than compiled
MAX_JUMP = 1 << 20  # ClamAV bounds `{n-m}` too; anything larger is a typo or an attack


class HexSigError(ValueError):
    pass


# Tokens: ("lit", bytes) | ("cls", bytes-of-allowed) | ("any", lo, hi|None) | ("alt", [tokens...])
#         | ("nalt", [bytes...]) | ("bound", "B"|"L"|"W")
Token = tuple


_HEX = "0123456789abcdefABCDEF"


def _nibble_class(s: str) -> bytes:
    hi, lo = s[0], s[1]
    if hi == "?" and lo == "?":
        return bytes(range(256))
    if hi == "?":
        v = int(lo, 16)
        return bytes(h << 4 | v for h in range(16))
    v = int(hi, 16)
    return bytes(v << 4 | low for low in range(16))


def _parse_range(body: str, what: str) -> tuple[int, int | None]:
    try:
        if body.startswith("-"):
            lo, hi = 0, int(body[1:])
        elif body.endswith("-"):
            lo, hi = int(body[:-1]), None
        elif "-" in body:
            a, b = body.split("-", 1)
            lo, hi = int(a), int(b)
        else:
            lo = hi = int(body)
    except ValueError:
        raise HexSigError(f"bad {what} {{{body}}}") from None
    if lo < 0 or (hi is not None and (hi < lo or hi > MAX_JUMP)) or lo > MAX_JUMP:
        raise HexSigError(f"bad {what} range {body!r}")
    return lo, hi


def parse(sig: str) -> list[Token]:
    """Parse a hex signature into tokens; raise HexSigError naming the problem."""
    tokens = _parse(sig)
    # ClamAV rejects patterns without two fixed bytes anywhere; so do we (it would match anything).
    if sum(len(t[1]) for t in tokens if t[0] == "lit") < 2 and not any(
        t[0] == "alt" for t in tokens
    ):
        raise HexSigError("signature needs at least two fixed bytes")
    return tokens


def _parse(sig: str) -> list[Token]:
    if not sig:
        raise HexSigError("empty hex signature")
    if len(sig) > MAX_SIG_HEX:
        raise HexSigError(f"hex signature longer than {MAX_SIG_HEX} characters")
    tokens: list[Token] = []
    i, n = 0, len(sig)
    while i < n:
        c = sig[i]
        if c in _HEX or c == "?":
            if i + 1 >= n:
                raise HexSigError(f"odd number of hex digits at position {i}")
            pair = sig[i : i + 2]
            if not all(ch in _HEX or ch == "?" for ch in pair):
                raise HexSigError(f"bad hex byte {pair!r} at position {i}")
            if "?" in pair:
                if pair == "??":
                    tokens.append(("any", 1, 1))
                else:
                    tokens.append(("cls", _nibble_class(pair)))
            else:
                tokens.append(("lit", bytes([int(pair, 16)])))
            i += 2
        elif c == "*":
            tokens.append(("any", 0, None))
            i += 1
        elif c in "{[":
            close = "}" if c == "{" else "]"
            j = sig.find(close, i)
            if j < 0:
                raise HexSigError(f"unterminated {c} at position {i}")
            lo, hi = _parse_range(sig[i + 1 : j], "jump" if c == "{" else "anchored range")
            if c == "[" and (hi is None or hi > 32):
                raise HexSigError(f"anchored range [{sig[i + 1 : j]}] must be bounded (≤ 32)")
            tokens.append(("any", lo, hi))
            i = j + 1
        elif c == "!" or c == "(":
            neg = c == "!"
            if neg:
                if i + 1 >= n or sig[i + 1] != "(":
                    raise HexSigError(f"'!' not followed by '(' at position {i}")
                i += 1
            j = sig.find(")", i)
            if j < 0:
                raise HexSigError(f"unterminated '(' at position {i}")
            body = sig[i + 1 : j]
            if body in ("B", "L", "W") and not neg:
                tokens.append(("bound", body))
            else:
                alts = body.split("|")
                if len(alts) < 2 and not neg:
                    raise HexSigError(f"alternative ({body}) needs at least two choices")
                parsed = []
                for a in alts:
                    if not a:
                        raise HexSigError(f"empty choice in ({body})")
                    sub = _parse(a)
                    if any(
                        t[0] not in ("lit", "cls", "any") or (t[0] == "any" and t[1:] != (1, 1))
                        for t in sub
                    ):
                        raise HexSigError(f"choice {a!r} may hold only bytes, nibbles and ??")
                    parsed.append(sub)
                if neg:
                    if any(any(t[0] != "lit" for t in p) for p in parsed):
                        raise HexSigError(f"negated choice !({body}) may hold only fixed bytes")
                    lens = {len(p) for p in parsed}
                    if len(lens) != 1:
                        raise HexSigError(f"negated choices !({body}) must have equal length")
                    tokens.append(("nalt", [b"".join(t[1] for t in p) for p in parsed]))
                else:
                    tokens.append(("alt", parsed))
            i = j + 1
        elif c in " \t\r\n":
            raise HexSigError(f"whitespace at position {i}")
        else:
            raise HexSigError(f"unexpected character {c!r} at position {i}")
    return _merge(tokens)


def _merge(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    for t in tokens:
        if t[0] == "lit" and out and out[-1][0] == "lit":
            out[-1] = ("lit", out[-1][1] + t[1])
        elif t[0] == "any" and out and out[-1][0] == "any":
            # `**`, `*{2}`, `??{1-3}`: one gap, not a chain a backtracking matcher explores
            lo = out[-1][1] + t[1]
            hi = None if out[-1][2] is None or t[2] is None else out[-1][2] + t[2]
            out[-1] = ("any", lo, hi)
        else:
            out.append(t)
    return out


def _cls(allowed: bytes) -> bytes:
    return b"[" + b"".join(b"\\x%02x" % c for c in sorted(set(allowed))) + b"]"


def _esc(data: bytes) -> bytes:
    return b"".join(b"\\x%02x" % c for c in data)


def _widen(tokens: list[Token]) -> list[Token]:
    """UTF-16LE form of a pattern, as the `w` modifier of logical subsignatures asks."""
    out: list[Token] = []
    for t in tokens:
        kind = t[0]
        if kind == "lit":
            out.append(("lit", b"".join(bytes([c, 0]) for c in t[1])))
        elif kind == "cls":
            out += [t, ("lit", b"\x00")]
        elif kind == "any":
            out.append(("any", t[1] * 2, None if t[2] is None else t[2] * 2))
        elif kind == "alt":
            out.append(("alt", [_widen(a) for a in t[1]]))
        elif kind == "nalt":
            out.append(("nalt", [b"".join(bytes([c, 0]) for c in a) for a in t[1]]))
        else:
            out.append(t)
    return _merge(out)


_WORD = b"[0-9A-Za-z_]"


# ClamAV's (B) is not \b: the bytes that count as a boundary differ before and after the
# pattern (measured with clamscan 1.4 over all 256 bytes; see test_match_clamscan.py).
_B_BEFORE = bytes([9, 10, 11, 12, 13, 32, 45, 46, 47, 60, 64, 95])
_B_AFTER = bytes([9, 10, 11, 12, 13, 32, 34, 39, 45, 47, 61, 62, 95])


def to_regex(tokens: list[Token]) -> bytes:
    parts: list[bytes] = []
    last = len(tokens) - 1
    for idx, t in enumerate(tokens):
        kind = t[0]
        if kind == "lit":
            parts.append(_esc(t[1]))
        elif kind == "cls":
            parts.append(_cls(t[1]))
        elif kind == "any":
            lo, hi = t[1], t[2]
            if hi is None:
                parts.append(b".*?" if lo == 0 else b".{%d,}?" % lo)
            elif lo == hi:
                parts.append(b"." if lo == 1 else b".{%d}" % lo)
            else:
                parts.append(b".{%d,%d}?" % (lo, hi))
        elif kind == "alt":
            parts.append(b"(?:" + b"|".join(to_regex(a) for a in t[1]) + b")")
        elif kind == "nalt":
            size = len(t[1][0])
            if size == 1:  # a class, not a lookahead: keeps the pattern Hyperscan-compatible
                parts.append(b"[^" + b"".join(_esc(a) for a in t[1]) + b"]")
            else:
                parts.append(b"(?!" + b"|".join(_esc(a) for a in t[1]) + b")" + (b".{%d}" % size))
        elif kind == "bound":
            if t[1] == "B" and idx == 0:
                parts.append(b"(?:(?<=" + _cls(_B_BEFORE) + b")|(?<![\\x00-\\xff]))")
            elif t[1] == "B" and idx == last:
                parts.append(b"(?:(?=" + _cls(_B_AFTER) + b")|(?![\\x00-\\xff]))")
            elif t[1] == "B":  # word boundary, file boundaries included
                parts.append(
                    b"(?:(?<!"
                    + _WORD
                    + b")(?="
                    + _WORD
                    + b")|(?<="
                    + _WORD
                    + b")(?!"
                    + _WORD
                    + b")|\\A|\\Z)"
                )
            elif t[1] == "L":  # CR, CRLF, LF or a file boundary
                parts.append(b"(?:\\r\\n|\\r|\\n|\\A|\\Z)")
            else:  # (W): one non-alphanumeric byte
                parts.append(b"[^0-9A-Za-z]")
    return b"".join(parts)


def anchor(tokens: list[Token]) -> bytes:
    """The longest fixed run (top level only): every match of the pattern contains it."""
    best = b""
    for t in tokens:
        if t[0] == "lit" and len(t[1]) > len(best):
            best = t[1]
    return best


@dataclass(frozen=True)
class CompiledHex:
    regex: bytes  # Python `re` source, DOTALL
    anchors: tuple[bytes, ...]  # fixed runs, any of which a match contains; () → always verify
    caseless: bool = False


def compile_hex(
    sig: str,
    *,
    nocase: bool = False,
    wide: bool = False,
    ascii_too: bool = False,
    fullword: bool = False,
) -> CompiledHex:
    tokens = parse(sig)
    variants = [tokens]
    if wide:
        variants = [_widen(tokens)] + ([tokens] if ascii_too else [])
    regexes = [to_regex(v) for v in variants]
    rx = regexes[0] if len(regexes) == 1 else b"(?:" + b"|".join(regexes) + b")"
    if fullword:
        rx = b"(?<![0-9A-Za-z])" + rx + b"(?![0-9A-Za-z])"
    anchors = tuple(anchor(v) for v in variants)
    if any(len(a) < 2 for a in anchors):
        anchors = ()  # a one-byte anchor would fire on every file: verify directly instead
    if nocase:
        rx = b"(?i)" + rx
    # Not compiled here: the regex is built from escaped bytes and bounded repeats only, and
    # compiling 10 000 of them would dominate load time; the matcher compiles on first use.
    return CompiledHex(rx, anchors, nocase)
