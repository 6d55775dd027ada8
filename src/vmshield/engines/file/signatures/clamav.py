"""Line parsers for ClamAV's text databases: .hdb .hsb .fp .sfp .ndb .ldb .ign2.

Each parser takes one line and returns a signature object or raises `SigError` with the reason;
the database loader adds the file and line number and carries on with the next line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import regex

from vmshield.engines.file.signatures.execinfo import ExeInfo
from vmshield.engines.file.signatures.hexsig import CompiledHex, HexSigError, compile_hex

# The ClamAV functionality level we claim (ClamAV 1.4 is 200): signatures whose min/max FLEVEL
# exclude it are skipped and counted, as clamscan does, not rejected.
FLEVEL = 200

MAX_NAME = 512
_NAME_OK = re.compile(r"^[\x21-\x7e][\x20-\x7e]*$")


class SigError(ValueError):
    pass


class SkipSig(Exception):
    """A valid line this engine must not load (functionality level out of range)."""


def _name(raw: str) -> str:
    name = raw.strip()
    if not name:
        raise SigError("empty signature name")
    if len(name) > MAX_NAME or not _NAME_OK.match(name):
        raise SigError(f"bad signature name {name[:40]!r}")
    return name


def _flevel(minfl: str | None, maxfl: str | None) -> None:
    try:
        if len(minfl or "") > 9 or len(maxfl or "") > 9:
            raise ValueError
        lo = int(minfl) if minfl else 0
        hi = int(maxfl) if maxfl else None
    except ValueError:
        raise SigError(f"bad functionality level {minfl!r}:{maxfl!r}") from None
    if lo > FLEVEL or (hi is not None and hi < FLEVEL):
        raise SkipSig()


# --- hashes -------------------------------------------------------------------------------------

_HASH_KIND = {32: "md5", 40: "sha1", 64: "sha256"}
_HEXDIGITS = re.compile(r"^[0-9a-fA-F]+$")


@dataclass(frozen=True)
class HashSig:
    kind: str  # md5 | sha1 | sha256
    digest: str  # lowercase hex
    size: int | None  # None for `*`
    name: str


def parse_hash(line: str, *, allow: tuple[str, ...]) -> HashSig:
    """`HASH:SIZE:NAME[:FLEVEL[:MAXFLEVEL]]` (.hdb/.fp: MD5; .hsb/.sfp: SHA1 or SHA256)."""
    parts = line.split(":")
    if len(parts) < 3 or len(parts) > 5:
        raise SigError(f"expected HASH:SIZE:NAME, got {len(parts)} fields")
    digest, size_s, name = parts[0].strip(), parts[1].strip(), parts[2]
    kind = _HASH_KIND.get(len(digest))
    if kind is None or not _HEXDIGITS.match(digest):
        raise SigError(
            f"bad hash {digest[:70]!r} (want {' or '.join(a.upper() for a in allow)} hex)"
        )
    if kind not in allow:
        raise SigError(
            f"{kind.upper()} hash where {'/'.join(a.upper() for a in allow)} is expected"
        )
    if size_s == "*":
        size = None
    else:
        if not (size_s.isascii() and size_s.isdigit()) or len(size_s) > 15:
            raise SigError(f"bad file size {size_s!r}")
        size = int(size_s)
    _flevel(parts[3] if len(parts) > 3 else None, parts[4] if len(parts) > 4 else None)
    return HashSig(kind, digest.lower(), size, _name(name))


# --- offsets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offset:
    kind: str  # any | abs | eof | ep | sx | se | sl
    value: int = 0  # abs: from the start; eof: bytes before the end; ep/sx/sl: added to the base
    shift: int = 0  # MaxShift: the match may start up to this much later
    section: int = 0  # sx / se: section index (from 0)

    @property
    def needs_exe(self) -> bool:
        return self.kind in ("ep", "sx", "se", "sl")

    def window(self, size: int, exe: ExeInfo | None = None) -> tuple[int, int] | None:
        """First and last allowed start position in a file of `size` bytes (None: impossible)."""
        if self.kind == "any":
            return 0, size
        shift = self.shift
        if self.kind == "abs":
            start = self.value
        elif self.kind == "eof":
            start = size - self.value
        else:
            if exe is None:
                return None
            if self.kind == "ep":
                if exe.entry is None:
                    return None
                start = exe.entry + self.value
            elif self.kind == "sl":
                if not exe.sections:
                    return None
                start = exe.sections[-1][0] + self.value
            else:
                if self.section >= len(exe.sections):
                    return None
                off, sec_size = exe.sections[self.section]
                start = off + (self.value if self.kind == "sx" else 0)
                if self.kind == "se":
                    shift = sec_size
        if start < 0 or start > size:
            return None
        return start, start + shift


_N = r"([0-9]{1,15})"
_OFFSETS = [
    (re.compile(r"^\*$"), "any"),
    (re.compile(rf"^{_N}(?:,{_N})?$"), "abs"),
    (re.compile(rf"^EOF-{_N}(?:,{_N})?$"), "eof"),
    (re.compile(rf"^EP([+-]){_N}(?:,{_N})?$"), "ep"),
    (re.compile(rf"^S{_N}\+{_N}(?:,{_N})?$"), "sx"),
    (re.compile(rf"^SE{_N}(?:,{_N})?$"), "se"),
    (re.compile(rf"^SL\+{_N}(?:,{_N})?$"), "sl"),
]


def parse_offset(text: str) -> Offset:
    """`*`, `n`, `EOF-n`, `EP+n`, `EP-n`, `Sx+n`, `SEx`, `SL+n`, each but `*` with `,MaxShift`."""
    text = text.strip()
    for rx, kind in _OFFSETS:
        m = rx.match(text)
        if not m:
            continue
        g = m.groups()
        if kind == "any":
            return Offset("any")
        if kind in ("abs", "eof"):
            return Offset(kind, int(g[0]), int(g[1] or 0))
        if kind == "ep":
            v = int(g[1])
            return Offset("ep", -v if g[0] == "-" else v, int(g[2] or 0))
        if kind == "sx":
            return Offset("sx", int(g[1]), int(g[2] or 0), section=int(g[0]))
        if kind == "se":
            return Offset("se", 0, int(g[1] or 0), section=int(g[0]))
        return Offset("sl", int(g[0]), int(g[1] or 0))
    if text.startswith("*,"):
        raise SigError("offset '*' cannot have a MaxShift")
    if text.startswith(("VI", "$", "EP", "S")):
        raise SigError(f"offset {text!r} is not supported (version-info and macro offsets)")
    raise SigError(f"bad offset {text!r}")


# --- extended body signatures (.ndb) ------------------------------------------------------------

TARGET_TYPES = {
    0: "any",
    1: "PE",
    2: "OLE2",
    3: "HTML",
    4: "mail",
    5: "graphics",
    6: "ELF",
    7: "ASCII text",
    8: "unused",
    9: "Mach-O",
    10: "PDF",
    11: "Flash",
    12: "Java class",
    13: "internal",
    14: "internal",
}


@dataclass(frozen=True)
class BodySig:
    name: str
    target: int
    offset: Offset
    hex: CompiledHex


def _target(text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 2 or int(text) not in TARGET_TYPES:
        raise SigError(f"bad target type {text!r} (0-14)")
    t = int(text)
    if t in (8, 13, 14):
        raise SigError(f"target type {t} ({TARGET_TYPES[t]}) is not supported")
    return t


def parse_ndb(line: str) -> BodySig:
    """`Name:TargetType:Offset:HexSig[:MinFL[:MaxFL]]`."""
    parts = line.split(":")
    if len(parts) < 4 or len(parts) > 6:
        raise SigError(f"expected Name:TargetType:Offset:HexSig, got {len(parts)} fields")
    name = _name(parts[0])
    target = _target(parts[1])
    offset = parse_offset(parts[2])
    _flevel(parts[4] if len(parts) > 4 else None, parts[5] if len(parts) > 5 else None)
    try:
        hx = compile_hex(parts[3].strip())
    except HexSigError as exc:
        raise SigError(f"hex signature: {exc}") from None
    return BodySig(name, target, offset, hx)


# --- logical signatures (.ldb) ------------------------------------------------------------------


@dataclass(frozen=True)
class SubSig:
    offset: Offset
    hex: CompiledHex | None  # None for a PCRE subsignature
    pcre: bytes | None = None  # Python `re` source
    pcre_flags: int = 0
    trigger: object = None  # expression AST over the other subsignatures (PCRE only)
    bcomp: ByteCompare | None = None  # a byte-compare subsignature (hex and pcre None)


@dataclass(frozen=True)
class ByteCompare:
    """`N(>>off#[hdi][lbe]len#cmp[,cmp])`: read `length` bytes `shift` bytes from the start of
    each match of subsignature `ref` (negative: before it) and compare them as a number."""

    ref: int
    shift: int
    base: str  # h: hex text, d: decimal text, i: binary integer
    little: bool
    exact: bool
    length: int
    comparisons: tuple[tuple[str, int], ...]

    def holds(self, data: bytes, start: int) -> bool:
        pos = start + self.shift
        if pos < 0 or pos + self.length > len(data):
            return False
        raw = data[pos : pos + self.length]
        if self.base == "i":
            value = int.from_bytes(raw, "little" if self.little else "big")
        else:
            digits = b"0123456789abcdefABCDEF" if self.base == "h" else b"0123456789"
            n = 0
            while n < len(raw) and raw[n] in digits:
                n += 1
            if n == 0 or (self.exact and n != len(raw)):
                return False
            value = int(raw[:n], 16 if self.base == "h" else 10)
        for op, x in self.comparisons:
            if not (value < x if op == "<" else value > x if op == ">" else value == x):
                return False
        return True


_BCOMP = re.compile(r"^([0-9]{1,2})\((<<|>>)([0-9]{1,9})#([a-z]+?)([0-9]{1,2})#([^)]*)\)$")
_BCOMP_CMP = re.compile(r"^([<>=])([0-9]{1,19})$")


def _parse_bcomp(text: str, nsub: int, me: int) -> SubSig:
    m = _BCOMP.match(text)
    if not m:
        raise SigError(f"bad byte-compare subsignature {text[:60]!r}")
    ref, direction, shift_s, opts, len_s, cmps = m.groups()
    if int(ref) >= nsub or int(ref) == me:
        raise SigError(f"byte-compare refers to subsignature {ref}, which is not another one")
    base, flags = opts[0], opts[1:]
    if base not in "hdi" or set(flags) - set("lbe") or len(set(flags)) != len(flags):
        # `a` (automatic base) and little-endian hex text disagree with clamscan here: refused.
        raise SigError(f"byte-compare options {opts!r} are not supported (h, d, i with l/b/e)")
    if "l" in flags and "b" in flags:
        raise SigError("byte-compare cannot be both little and big endian")
    length = int(len_s)
    if base == "i" and length not in (1, 2, 4, 8):
        raise SigError(f"binary byte-compare reads 1, 2, 4 or 8 bytes, not {length}")
    if base == "i" and not set(flags) & {"l", "b"}:
        raise SigError("binary byte-compare needs l (little) or b (big endian)")
    if base == "h" and "b" not in flags:
        raise SigError("hex byte-compare needs big endian (b): little-endian text is not supported")
    if not 1 <= length <= 18:
        raise SigError(f"byte-compare length {length} (1-18)")
    comparisons = []
    for c in cmps.split(","):
        cm = _BCOMP_CMP.match(c.strip())
        if not cm:
            raise SigError(f"bad byte-compare comparison {c!r}")
        comparisons.append((cm.group(1), int(cm.group(2))))
    if len(comparisons) > 2:
        raise SigError("at most two byte-compare comparisons")
    shift = int(shift_s) * (-1 if direction == "<<" else 1)
    bc = ByteCompare(
        int(ref),
        shift,
        base,
        "l" in flags,
        "e" in flags,
        length,
        tuple(comparisons),
    )
    return SubSig(Offset("any"), None, bcomp=bc)


@dataclass(frozen=True)
class LogicalSig:
    name: str
    target: int | None
    filesize: tuple[int, int] | None
    expr: object  # AST, see _parse_expr
    subsigs: tuple[SubSig, ...]
    needs_counts: bool = field(default=False)
    container: str | None = None  # Container:CL_TYPE_X: only inside that kind of container
    # EntryPoint / NumberOfSections: ranges the executable's entry point (file offset) and
    # section count must fall in; a file that is no PE/ELF never matches such a signature.
    entrypoint: tuple[int, int] | None = None
    nsections: tuple[int, int] | None = None
    # Intermediates:A>B>…: the innermost containers holding the file, outermost first (None:
    # CL_TYPE_ANY). Checked with clamscan: a suffix of the chain from the scanned file down.
    intermediates: tuple[str | None, ...] = ()

    @property
    def needs_exe(self) -> bool:
        return self.entrypoint is not None or self.nsections is not None


# ClamAV container types we can tell apart (the container readers' format names, see
# containers.detect; the OOXML kinds are told apart by the scanner, see scanner._detect). Others
# (CL_TYPE_AUTOIT, …) are refused by name.
CONTAINER_TYPES = {
    "CL_TYPE_ZIP": "zip",
    # An OOXML document is both (checked with clamscan: Container:CL_TYPE_ZIP and
    # Container:CL_TYPE_OOXML_WORD both match a member of a .docx).
    "CL_TYPE_OOXML_WORD": "ooxml_word",
    "CL_TYPE_OOXML_XL": "ooxml_xl",
    "CL_TYPE_OOXML_PPT": "ooxml_ppt",
    "CL_TYPE_GZ": "gzip",
    "CL_TYPE_BZ": "bzip2",
    "CL_TYPE_XZ": "xz",
    "CL_TYPE_7Z": "7z",
    "CL_TYPE_RAR": "rar",
    "CL_TYPE_MSCAB": "cab",
    "CL_TYPE_ARJ": "arj",
    "CL_TYPE_ISO9660": "iso9660",
    "CL_TYPE_CPIO_OLD": "cpio",
    "CL_TYPE_CPIO_ODC": "cpio",
    "CL_TYPE_CPIO_NEWC": "cpio",
    "CL_TYPE_CPIO_CRC": "cpio",
    "CL_TYPE_POSIX_TAR": "tar",
    "CL_TYPE_OLD_TAR": "tar",
    "CL_TYPE_MSOLE2": "ole2",
    "CL_TYPE_PDF": "pdf",
    "CL_TYPE_RTF": "rtf",
    "CL_TYPE_MAIL": "mime",
    "CL_TYPE_HTML": "html",
    "CL_TYPE_TNEF": "tnef",
    "CL_TYPE_MSSZDD": "szdd",
    "CL_TYPE_MSCHM": "chm",
    "CL_TYPE_BINHEX": "binhex",
    "CL_TYPE_UUENCODED": "uuencode",
}


MAX_SUBSIGS = 64


def _range(text: str, what: str) -> tuple[int, int]:
    m = re.match(r"^([0-9]{1,15})(?:-([0-9]{1,15}))?$", text.strip())
    if not m:
        raise SigError(f"bad {what} range {text!r}")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if hi < lo:
        raise SigError(f"bad {what} range {text!r}")
    return lo, hi


@dataclass
class _Tdb:
    target: int | None = None
    filesize: tuple[int, int] | None = None
    container: str | None = None
    entrypoint: tuple[int, int] | None = None
    nsections: tuple[int, int] | None = None
    intermediates: tuple[str | None, ...] = ()


MAX_INTERMEDIATES = 16


def _intermediates(val: str) -> tuple[str | None, ...]:
    items = [v.strip() for v in val.split(">")]
    if not items or len(items) > MAX_INTERMEDIATES:
        raise SigError(f"Intermediates needs 1 to {MAX_INTERMEDIATES} container types")
    out: list[str | None] = []
    for v in items:
        if v == "CL_TYPE_ANY":
            out.append(None)
        elif v in CONTAINER_TYPES:
            out.append(CONTAINER_TYPES[v])
        else:
            raise SigError(f"Intermediates: container type {v!r} is not supported")
    return tuple(out)


def _parse_tdb(tdb: str) -> _Tdb:
    target: int | None = None
    filesize = None
    container = None
    entrypoint = nsections = None
    intermediates: tuple[str | None, ...] = ()
    for item in tdb.split(","):
        if ":" not in item:
            raise SigError(f"target block item {item!r} is not Key:Value")
        key, val = item.split(":", 1)
        if key == "Target":
            target = _target(val)
        elif key == "Engine":
            lo, hi = _range(val, "Engine")
            if lo > FLEVEL or hi < FLEVEL:
                raise SkipSig()
        elif key == "FileSize":
            filesize = _range(val, "FileSize")
        elif key == "Container":
            container = CONTAINER_TYPES.get(val.strip())
            if container is None:
                raise SigError(f"container type {val.strip()!r} is not supported")
        elif key in ("EntryPoint", "NumberOfSections"):
            # ClamAV takes only `x-y` here (a single number is a malformed database there).
            if "-" not in val:
                raise SigError(f"{key} needs a range x-y, got {val!r}")
            if key == "EntryPoint":
                entrypoint = _range(val, key)
            else:
                nsections = _range(val, key)
        elif key == "Intermediates":
            intermediates = _intermediates(val)
        elif key in (
            "IconGroup1",
            "IconGroup2",
            "HandlerType",
        ):
            raise SigError(f"target block key {key} is not supported")
        else:
            raise SigError(f"unknown target block key {key!r}")
    if (entrypoint or nsections) and target not in (1, 6, 9):
        # As clamscan: these describe an executable, so the signature must target one.
        raise SigError("EntryPoint/NumberOfSections need Target:1 (PE), 6 (ELF) or 9 (Mach-O)")
    return _Tdb(target, filesize, container, entrypoint, nsections, intermediates)


# Expression AST: int (subsig index) | ("&"|"|", [nodes]) | ("cmp", op, node, x, y|None)
_EXPR_TOKEN = re.compile(r"\s*([0-9]{1,9}|[&|()=<>,])")


def parse_expr(text: str, nsub: int) -> tuple[object, bool]:
    """Parse a logical expression; returns the AST and whether it uses match counts."""
    toks: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _EXPR_TOKEN.match(text, pos)
        if not m:
            raise SigError(f"bad character {text[pos]!r} in logical expression at {pos}")
        toks.append(m.group(1))
        pos = m.end()
    if not toks:
        raise SigError("empty logical expression")
    state = {"i": 0, "counts": False, "depth": 0}

    def peek() -> str | None:
        return toks[state["i"]] if state["i"] < len(toks) else None

    def take() -> str:
        t = peek()
        if t is None:
            raise SigError("logical expression ends too early")
        state["i"] += 1
        return t

    def number() -> int:
        t = take()
        if not (t.isascii() and t.isdigit()):
            raise SigError(f"number expected in logical expression, got {t!r}")
        return int(t)

    def primary() -> object:
        t = take()
        if t == "(":
            state["depth"] += 1
            if state["depth"] > 64:
                raise SigError("logical expression nested too deep")
            node = disj()
            if peek() != ")":
                raise SigError("missing ')' in logical expression")
            take()
            state["depth"] -= 1
        elif t.isascii() and t.isdigit():
            node = int(t)
            if node >= nsub:
                raise SigError(f"logical expression uses subsignature {node}, only {nsub} given")
        else:
            raise SigError(f"unexpected {t!r} in logical expression")
        if peek() in ("=", ">", "<"):
            op = take()
            x = number()
            y = None
            if peek() == ",":
                take()
                y = number()
            state["counts"] = True
            node = ("cmp", op, node, x, y)
        return node

    def conj() -> object:
        nodes = [primary()]
        while peek() == "&":
            take()
            nodes.append(primary())
        return nodes[0] if len(nodes) == 1 else ("&", nodes)

    def disj() -> object:
        nodes = [conj()]
        while peek() == "|":
            take()
            nodes.append(conj())
        return nodes[0] if len(nodes) == 1 else ("|", nodes)

    ast = disj()
    if peek() is not None:
        raise SigError(f"unexpected {peek()!r} after the logical expression")
    return ast, bool(state["counts"])


def eval_expr(node: object, counts: list[int]) -> tuple[bool, int, frozenset[int]]:
    """(truth, number of matches, subsignatures matched) of an expression node."""
    if isinstance(node, int):
        c = counts[node]
        return c > 0, c, frozenset((node,)) if c else frozenset()
    assert isinstance(node, tuple)
    if node[0] == "cmp":
        _, op, sub, x, y = node
        _, c, seen = eval_expr(sub, counts)
        ok = c == x if op == "=" else c > x if op == ">" else c < x
        if y is not None:
            ok = ok and len(seen) >= y
        return ok, c, seen
    results = [eval_expr(n, counts) for n in node[1]]
    truth = all(r[0] for r in results) if node[0] == "&" else any(r[0] for r in results)
    total = sum(r[1] for r in results)
    seen = frozenset().union(*(r[2] for r in results))
    return truth, total, seen


_PCRE_FLAGS = {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE, "x": re.VERBOSE}


def _parse_pcre(text: str, nsub: int) -> SubSig:
    """`[Offset:]Trigger/regex/[flags]`: the regex is tried when the trigger expression holds."""
    first = text.index("/")
    last = text.rindex("/")
    if last == first:
        raise SigError("PCRE subsignature needs /regex/")
    head, body, flags_s = text[:first], text[first + 1 : last], text[last + 1 :]
    offset = Offset("any")
    if ":" in head:
        off_s, head = head.rsplit(":", 1)
        offset = parse_offset(off_s)
    trigger, _ = parse_expr(head, nsub)
    flags = 0
    for f in flags_s:
        if f in _PCRE_FLAGS:
            flags |= _PCRE_FLAGS[f]
        elif f in "rega":  # rolling, encompass, global, anchored-to-offset: accepted, see docs
            continue
        else:
            raise SigError(f"PCRE flag {f!r} is not supported")
    try:
        rx = (
            bytes.fromhex(body)
            if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", body)
            else body.encode("latin-1")
        )
        # Compiled by `regex`, the module that runs it (with a timeout, see matcher).
        regex.compile(rx, flags)
    except regex.error as exc:
        raise SigError(f"bad PCRE /{body[:40]}/: {exc}") from None
    return SubSig(offset, None, rx, flags, trigger)


def _parse_subsig(text: str, nsub: int, me: int = -1) -> SubSig:
    if text.startswith("${"):
        raise SigError("macro subsignatures are not supported")
    if "#" in text and "(" in text and text.endswith(")") and text[:1].isdigit():
        return _parse_bcomp(text, nsub, me)
    mods = ""
    if "::" in text:
        text, mods = text.split("::", 1)
    if "/" in text:
        return _parse_pcre(text, nsub)
    offset = Offset("any")
    if ":" in text:
        off_s, text = text.split(":", 1)
        offset = parse_offset(off_s)
    bad = set(mods) - set("iwfa")
    if bad:
        raise SigError(f"unknown subsignature modifier(s) {''.join(sorted(bad))!r}")
    try:
        hx = compile_hex(
            text.strip(),
            nocase="i" in mods,
            wide="w" in mods,
            ascii_too="a" in mods,
            fullword="f" in mods,
        )
    except HexSigError as exc:
        raise SigError(f"hex subsignature: {exc}") from None
    return SubSig(offset, hx)


def parse_ldb(line: str) -> LogicalSig:
    """`Name;TargetDescriptionBlock;LogicalExpression;Subsig0;Subsig1;...`."""
    parts = line.split(";")
    if len(parts) < 4:
        raise SigError("expected Name;TargetDescriptionBlock;LogicalExpression;Subsig0[;...]")
    name = _name(parts[0])
    tdb = _parse_tdb(parts[1])
    subs_raw = parts[3:]
    if len(subs_raw) > MAX_SUBSIGS:
        raise SigError(f"more than {MAX_SUBSIGS} subsignatures")
    expr, counts = parse_expr(parts[2], len(subs_raw))
    subsigs = []
    for i, raw in enumerate(subs_raw):
        try:
            subsigs.append(_parse_subsig(raw.strip(), len(subs_raw), i))
        except SigError as exc:
            raise SigError(f"subsignature {i}: {exc}") from None
    for i, sub in enumerate(subsigs):
        if sub.bcomp is not None and subsigs[sub.bcomp.ref].hex is None:
            raise SigError(f"subsignature {i}: byte-compare must refer to a hex subsignature")
    return LogicalSig(
        name,
        tdb.target,
        tdb.filesize,
        expr,
        tuple(subsigs),
        counts,
        tdb.container,
        tdb.entrypoint,
        tdb.nsections,
        tdb.intermediates,
    )
