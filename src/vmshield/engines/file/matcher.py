"""Matching one buffer against a Database: hashes, body and logical signatures, YARA.

Body patterns never enter Hyperscan whole: each signature contributes its longest fixed run
(its anchor) as a single-match literal, so one Hyperscan pass over the buffer yields the few
candidate signatures, and only those are verified with their full pattern (wildcards, jumps,
alternatives, offsets) by the `regex` module. Signatures with no usable anchor are verified on
every buffer of their target type.

Every verification is bounded by the scan's remaining time: a backtracking pattern (a PCRE
subsignature, a gap pattern Hyperscan cannot take) runs with `regex`'s `timeout=`, and a crafted
file that would make it run for hours ends as `limits_exceeded (max_scan_time)` instead.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hyperscan
import regex
import yara

from vmshield.engines.file.limits import LimitExceeded
from vmshield.engines.file.signatures import yara_rules
from vmshield.engines.file.signatures.clamav import LogicalSig, Offset, SubSig, eval_expr
from vmshield.engines.file.signatures.execinfo import ExeInfo, exe_info, pe_info

if TYPE_CHECKING:
    from vmshield.engines.file.database import Database

MAX_COUNT = 1000  # counting matches for `A>X` stops here: no signature needs more
YARA_TIMEOUT = 60  # seconds; the scan budget bounds the whole file anyway
_NORMALIZED_TARGETS = (3, 4, 7)  # HTML, mail, text: ClamAV matches these on normalised text


@dataclass(frozen=True)
class Hit:
    name: str
    engine: str  # hash | body | logical | yara


def _norm_piece(low: bytes) -> bytes:
    out = b" ".join(low.split())
    # split() drops leading/trailing whitespace; keep one space there, as a run would become.
    if low[:1].isspace():
        out = b" " + out
    if low[-1:].isspace() and out[-1:] != b" ":
        out += b" "
    return out


def normalize_text(data: bytes, chunk: int = 1 << 20) -> bytes:
    """ClamAV's normalised text: lower case, each run of whitespace a single space. Done in
    1 MiB pieces: split() on a whole 100 MB file would hold millions of words at once."""
    pieces: list[bytes] = []
    for i in range(0, len(data), chunk):
        piece = _norm_piece(data[i : i + chunk].lower())
        if pieces and pieces[-1].endswith(b" ") and piece.startswith(b" "):
            piece = piece[1:]  # a whitespace run across the cut is still one space
        if piece:
            pieces.append(piece)
    return b"".join(pieces)


def file_types(data: bytes) -> frozenset[int]:
    """ClamAV target types the buffer belongs to (0 always)."""
    types = {0}
    head = data[:4096]
    if head[:2] == b"MZ":
        types.add(1)
    elif head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        types.add(2)
    elif head[:4] == b"\x7fELF":
        types.add(6)
    elif head[:4] in (
        b"\xfe\xed\xfa\xce",
        b"\xfe\xed\xfa\xcf",
        b"\xce\xfa\xed\xfe",
        b"\xcf\xfa\xed\xfe",
    ):
        types.add(9)
    elif head[:4] == b"\xca\xfe\xba\xbe":
        types.add(9 if len(head) > 7 and head[7] < 20 else 12)  # fat Mach-O vs Java class
    elif head[:3] in (b"FWS", b"CWS", b"ZWS"):
        types.add(11)
    elif (
        head[:6] in (b"GIF87a", b"GIF89a")
        or head[:8] == b"\x89PNG\r\n\x1a\n"
        or head[:3] == b"\xff\xd8\xff"
        or head[:2] == b"BM"
    ):
        types.add(5)
    if b"%PDF-" in data[:1024]:
        types.add(10)
    if b"\x00" not in head:
        low = head.lower()
        types.add(7)
        if b"<html" in low or b"<!doctype html" in low or b"<script" in low or b"<body" in low:
            types.add(3)
        if re.match(
            rb"(?:(?:from|received|return-path|message-id|mime-version|subject|to|date|delivered-to|x-[\w-]+):[^\n]*\r?\n)+",
            low,
        ):
            types.add(4)
    return frozenset(types)


# A pattern with a variable gap (`*`, `{n-}`, `{-n}`, `{n-m}`, `[n-m]`) is verified by Hyperscan:
# `re` backtracks through chained gaps in polynomial time, which a crafted file turns into hours.
_UNBOUNDED = re.compile(rb"\.\*\?|\.\{[0-9]+,[0-9]*\}\?")

# Anchors are searched case-insensitively: ClamAV also matches text files in their lower-cased
# (normalised) form, so a candidate may come from either form; verification decides.
_FLAGS = hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_CASELESS


def _hs_expr(lit: bytes) -> bytes:
    return b"".join(b"\\x%02x" % c for c in lit)


class Matcher:
    """Compiled form of a Database. Pickles its Hyperscan and YARA databases as bytes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # Pattern id → (kind, index, subindex); kind "b" body, "l" logical subsig.
        self.entries: list[tuple[str, int, int]] = []
        exprs: list[bytes] = []
        flags: list[int] = []
        self.always_body: list[int] = []
        self.always_logical: list[int] = []
        for i, sig in enumerate(db.body):
            if not sig.hex.anchors:
                self.always_body.append(i)
            for a in sig.hex.anchors:
                self.entries.append(("b", i, 0))
                exprs.append(_hs_expr(a))
                flags.append(_FLAGS)
        for i, lsig in enumerate(db.logical):
            anchored = False
            for k, sub in enumerate(lsig.subsigs):
                if sub.hex is None:
                    continue
                for a in sub.hex.anchors:
                    anchored = True
                    self.entries.append(("l", i, k))
                    exprs.append(_hs_expr(a))
                    flags.append(_FLAGS)
            # A logical signature with an unanchored hex subsignature (or only PCRE ones) might
            # hold without any anchor firing: check it on every buffer of its target.
            if not anchored or any(s.hex is not None and not s.hex.anchors for s in lsig.subsigs):
                self.always_logical.append(i)
        if db.yara_saved and not db.yara_always:
            for a in db.yara_anchors:
                self.entries.append(("y", 0, 0))
                exprs.append(_hs_expr(a))
                flags.append(_FLAGS)
        self._hs: Any = None
        self._hs_bytes: bytes | None = None
        if exprs:
            hsdb = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            hsdb.compile(expressions=exprs, ids=list(range(len(exprs))), flags=flags)
            self._hs = hsdb
        self._yara_saved = db.yara_saved
        self._yara_always = bool(db.yara_saved) and db.yara_always
        self._yara: Any = yara_rules.load(db.yara_saved) if db.yara_saved else None
        self._rx: dict[bytes, regex.Pattern[bytes]] = {}
        self._hsv: dict[bytes, Any] = {}

    # Pickling: compiled databases as bytes; regex cache rebuilt on demand.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_hs_bytes"] = hyperscan.dumpb(self._hs) if self._hs is not None else None
        state["_hs"] = None
        state["_yara"] = None
        state["_rx"] = {}
        state["_hsv"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._hs_bytes is not None:
            self._hs = hyperscan.loadb(self._hs_bytes, hyperscan.HS_MODE_BLOCK)
            self._hs.scratch = hyperscan.Scratch(self._hs)
            self._hs_bytes = None
        # `self.db` may not be restored yet (it holds us): use only our own state here.
        if self._yara_saved:
            self._yara = yara_rules.load(self._yara_saved)

    def _re(self, src: bytes) -> regex.Pattern[bytes]:
        rx = self._rx.get(src)
        if rx is None:
            rx = self._rx[src] = regex.compile(src, regex.DOTALL)
        return rx

    # --- hashes ---------------------------------------------------------------------------------

    def hash_hits(self, digests: dict[str, str], size: int) -> list[Hit]:
        hits = []
        for kind, digest in digests.items():
            for entry in self.db.hashes[kind].get(digest, ()):
                if entry.size is None or entry.size == size:
                    hits.append(Hit(entry.name, "hash"))
        return hits

    def section_hits(self, data: bytes | memoryview) -> list[Hit]:
        """.mdb/.msb: hashes of the raw data of each PE section."""
        kinds = [k for k, table in self.db.sections.items() if table]
        if not kinds or bytes(data[:2]) != b"MZ":
            return []
        info = pe_info(bytes(data[:65536]) if len(data) > 65536 else bytes(data))
        if info is None:
            return []
        hits = []
        for off, size in info.sections:
            if size == 0 or off + size > len(data):
                continue
            chunk = memoryview(data)[off : off + size]
            for kind in kinds:
                digest = hashlib.new(kind, chunk).hexdigest()
                for entry in self.db.sections[kind].get(digest, ()):
                    if entry.size is None or entry.size == size:
                        hits.append(Hit(entry.name, "hash"))
        return hits

    def allow_listed(self, digests: dict[str, str], size: int) -> bool:
        return any(self.db.allowed(kind, d, size) for kind, d in digests.items())

    # --- content --------------------------------------------------------------------------------

    def content_hits(
        self,
        data: bytes | memoryview,
        yara_timeout: float = YARA_TIMEOUT,
        # Format(s) of the enclosing container, for Container: (an OOXML document is two).
        container: str | frozenset[str] | None = None,
        deadline: float | None = None,  # time.monotonic() by which verification must end
        chain: tuple[str | frozenset[str] | None, ...] = (),  # all enclosing containers
    ) -> list[Hit]:
        if deadline is None:
            deadline = time.monotonic() + yara_timeout
        within = frozenset((container,)) if isinstance(container, str) else container or frozenset()
        cand_body: set[int] = set(self.always_body)
        cand_logical: set[int] = set(self.always_logical)
        cand_yara: list[bool] = [self._yara_always]
        buf = bytes(data) if isinstance(data, memoryview) else data
        # Like ClamAV, a text file is also matched in normalised form: lower-cased, every run of
        # whitespace one space (checked against clamscan). Same text rule as file_types().
        norm = (
            normalize_text(buf)
            if (self.db.body or self.db.logical) and b"\x00" not in buf[:4096]
            else None
        )
        if self._hs is not None and len(buf):
            entries = self.entries

            def on_match(pid: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
                kind, i, _k = entries[pid]
                if kind == "b":
                    cand_body.add(i)
                elif kind == "l":
                    cand_logical.add(i)
                else:
                    cand_yara[0] = True

            self._hs.scan(buf, on_match)
            if norm is not None and len(norm) != len(buf):
                # Case is already covered (anchors are caseless); whitespace runs are not.
                self._hs.scan(norm, on_match)
        hits: list[Hit] = []
        run_yara = self._yara is not None and cand_yara[0]
        if not cand_body and not cand_logical and not run_yara:
            return hits
        types = file_types(buf)

        def views(target: int | None) -> Iterator[bytes]:
            # HTML/mail/text targets see the normalised text only; other signatures see the raw
            # bytes and, for a text file, the normalised form too.
            if target not in _NORMALIZED_TARGETS:
                yield buf
            if norm is not None:
                yield norm

        exe_cache: list[ExeInfo | None] = []

        def exe() -> ExeInfo | None:
            if not exe_cache:
                exe_cache.append(exe_info(buf))
            return exe_cache[0]

        for i in sorted(cand_body):
            sig = self.db.body[i]
            if sig.target and sig.target not in types:
                continue
            rx = self._re(sig.hex.regex)
            ex = exe() if sig.offset.needs_exe else None
            if any(
                self._count(rx, sig.offset, v, len(v), 1, deadline, ex) for v in views(sig.target)
            ):
                hits.append(Hit(sig.name, "body"))
        for i in sorted(cand_logical):
            lsig = self.db.logical[i]
            if lsig.container is not None and lsig.container not in within:
                continue
            if lsig.intermediates and not _chain_ends_with(chain, lsig.intermediates):
                continue
            needs_exe = lsig.needs_exe or any(sub.offset.needs_exe for sub in lsig.subsigs)
            ex = exe() if needs_exe else None
            if any(
                self._logical(lsig, buf, v, types, len(v), deadline, ex) for v in views(lsig.target)
            ):
                hits.append(Hit(lsig.name, "logical"))
        if run_yara:
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _out_of_time("YARA rules")
                matches = self._yara.match(data=buf, timeout=max(1, int(left)))
            except yara.TimeoutError:
                # Reported as the scan-time limit, never as clean.
                raise LimitExceeded("max_scan_time", "YARA rules ran out of time") from None
            for m in matches:
                hits.append(Hit(m.rule, "yara"))
        return hits

    def _hs_verifier(self, src: bytes) -> tuple[Any, bool]:
        """A single-pattern Hyperscan database for a pattern with variable gaps, and whether it
        reports start offsets (SOM); (None, False): use `re`. Hyperscan refuses SOM for some
        large bounded gaps; then a database without SOM still answers "anywhere in the file?"
        and rules out most files before `re` is asked where."""
        got = self._hsv.get(src)
        if got is not None:
            return got  # type: ignore[no-any-return]
        result: tuple[Any, bool] = (None, False)
        body, flags = src, hyperscan.HS_FLAG_DOTALL
        if body.startswith(b"(?i)"):
            body, flags = body[4:], flags | hyperscan.HS_FLAG_CASELESS
        if not any(x in body for x in (b"(?!", b"(?<", b"(?=", b"\\A", b"\\Z")):
            for som in (True, False):
                try:
                    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
                    f = flags | (hyperscan.HS_FLAG_SOM_LEFTMOST if som else 0)
                    db.compile(expressions=[body], ids=[0], flags=[f])
                except Exception:  # noqa: BLE001 - "pattern too large" and the like
                    continue
                result = (db, som)
                break
        self._hsv[src] = result
        return result

    def _count(
        self,
        rx: regex.Pattern[bytes],
        offset: Offset,
        data: bytes,
        size: int,
        limit: int,
        deadline: float,
        exe: ExeInfo | None = None,
        hs_ok: bool = True,  # False for PCRE subsignatures: their dialect and flags are PCRE's
    ) -> int:
        """How many distinct start positions match, up to `limit`. Raises LimitExceeded
        (max_scan_time) when `deadline` passes: the file is never reported clean for it."""
        win = offset.window(size, exe)
        if win is None:
            return 0
        lo, hi = win
        if hs_ok and _UNBOUNDED.search(rx.pattern):
            hsdb, som = self._hs_verifier(rx.pattern)
            if hsdb is not None:
                if som:
                    return _hs_count(hsdb, data, lo, hi, size, limit, deadline)
                if not _hs_any(hsdb, memoryview(data)[lo:]):
                    return 0
                if lo == 0 and hi >= size and limit == 1:
                    return 1
        n = 0
        try:
            if offset.kind != "any" and hi - lo <= 64:
                for pos in range(lo, min(hi, size) + 1):
                    if rx.match(data, pos, timeout=_left(deadline)):
                        n += 1
                        if n >= limit:
                            break
                return n
            pos = lo
            while pos <= size:
                m = rx.search(data, pos, timeout=_left(deadline))
                if m is None or m.start() > hi:
                    break
                n += 1
                if n >= limit:
                    break
                pos = m.start() + 1
        except TimeoutError:
            raise _out_of_time("signature verification") from None
        return n

    def _starts(
        self,
        rx: regex.Pattern[bytes],
        offset: Offset,
        data: bytes,
        size: int,
        deadline: float,
        exe: ExeInfo | None,
    ) -> list[int]:
        """Start positions of a subsignature's matches (up to MAX_COUNT), for byte-compare."""
        win = offset.window(size, exe)
        if win is None:
            return []
        lo, hi = win
        out: list[int] = []
        pos = lo
        try:
            while pos <= min(hi, size) and len(out) < MAX_COUNT:
                m = rx.search(data, pos, timeout=_left(deadline))
                if m is None or m.start() > hi:
                    break
                out.append(m.start())
                pos = m.start() + 1
        except TimeoutError:
            raise _out_of_time("byte-compare") from None
        return out

    def _logical(
        self,
        lsig: LogicalSig,
        raw: bytes,
        data: bytes,
        types: frozenset[int],
        size: int,
        deadline: float,
        exe: ExeInfo | None = None,
    ) -> bool:
        if lsig.target and lsig.target not in types:
            return False
        if lsig.filesize and not lsig.filesize[0] <= len(raw) <= lsig.filesize[1]:
            return False
        if lsig.entrypoint is not None and not (
            exe is not None
            and exe.entry is not None
            and lsig.entrypoint[0] <= exe.entry <= lsig.entrypoint[1]
        ):
            return False
        if lsig.nsections is not None and not (
            exe is not None and lsig.nsections[0] <= len(exe.sections) <= lsig.nsections[1]
        ):
            return False
        # Counting stops one past the largest number the expression compares with.
        limit = min(MAX_COUNT, _max_const(lsig.expr) + 1) if lsig.needs_counts else 1
        counts = [0] * len(lsig.subsigs)
        pcre: list[tuple[int, SubSig]] = []
        bcomp: list[tuple[int, SubSig]] = []
        for k, sub in enumerate(lsig.subsigs):
            if sub.bcomp is not None:
                bcomp.append((k, sub))
                continue
            if sub.hex is None:
                pcre.append((k, sub))
                continue
            rx = self._re(sub.hex.regex)
            counts[k] = self._count(rx, sub.offset, data, size, limit, deadline, exe)
        for k, sub in bcomp:
            bc = sub.bcomp
            assert bc is not None
            if not counts[bc.ref]:
                continue
            ref = lsig.subsigs[bc.ref]
            assert ref.hex is not None
            starts = self._starts(self._re(ref.hex.regex), ref.offset, data, size, deadline, exe)
            counts[k] = sum(1 for s in starts if bc.holds(data, s))
        for k, sub in pcre:
            if sub.trigger is not None and not eval_expr(sub.trigger, counts)[0]:
                continue
            assert sub.pcre is not None
            rx = self._rx.get(b"pcre:%d:" % sub.pcre_flags + sub.pcre)
            if rx is None:
                rx = regex.compile(sub.pcre, sub.pcre_flags)
                self._rx[b"pcre:%d:" % sub.pcre_flags + sub.pcre] = rx
            counts[k] = self._count(rx, sub.offset, raw, size, limit, deadline, exe, hs_ok=False)
        return eval_expr(lsig.expr, counts)[0]

    def match(
        self,
        data: bytes | memoryview,
        *,
        want_sha: bool = True,
        time_left: float = YARA_TIMEOUT,
        container: str | frozenset[str] | None = None,
        chain: tuple[str | frozenset[str] | None, ...] = (),
    ) -> tuple[dict[str, str], list[Hit], bool]:
        """Hash and search one buffer. Returns (digests, hits, allow-listed)."""
        md5 = hashlib.md5(data)
        digests = {"md5": md5.hexdigest()}
        if want_sha or self.db.needs_sha:
            digests["sha1"] = hashlib.sha1(data).hexdigest()
            digests["sha256"] = hashlib.sha256(data).hexdigest()
        deadline = time.monotonic() + time_left
        size = len(data)
        if self.allow_listed(digests, size):
            return digests, [], True
        hits = self.hash_hits(digests, size) + self.section_hits(data)
        hits += self.content_hits(data, container=container, deadline=deadline, chain=chain)
        return digests, _dedupe(hits), False


def _chain_ends_with(
    chain: tuple[str | frozenset[str] | None, ...], want: tuple[str | None, ...]
) -> bool:
    """Intermediates: the innermost len(want) containers are these (None: any type)."""
    if len(chain) < len(want):
        return False
    for have, w in zip(chain[len(chain) - len(want) :], want, strict=True):
        if w is None:
            continue
        if have is None or (have != w if isinstance(have, str) else w not in have):
            return False
    return True


def _max_const(node: object) -> int:
    if isinstance(node, int):
        return 0
    assert isinstance(node, tuple)
    if node[0] == "cmp":
        return max(node[3], _max_const(node[2]))
    return max((_max_const(n) for n in node[1]), default=0)


def _hs_any(hsdb: Any, data: memoryview) -> bool:
    hit: list[bool] = []

    def on_match(_id: int, _start: int, _end: int, _f: int, _c: object) -> bool:
        hit.append(True)
        return True

    try:
        hsdb.scan(data, on_match)
    except hyperscan.ScanTerminated:
        pass
    return bool(hit)


def _left(deadline: float) -> float:
    """Seconds left for one `regex` call; out of time already is a limit, not a clean file."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _out_of_time("signature verification")
    return left


def _out_of_time(what: str) -> LimitExceeded:
    return LimitExceeded("max_scan_time", f"{what} ran out of time")


def _hs_count(
    hsdb: Any, data: bytes, lo: int, hi: int, size: int, limit: int, deadline: float
) -> int:
    """Distinct match starts in [lo, hi], up to `limit`, like the `re` loop (each next match is
    searched from one past the previous start), each step one linear Hyperscan pass."""
    view = memoryview(data)
    n = 0
    pos = lo
    found: list[int] = []
    anywhere = hi >= size and limit == 1  # existence is enough: stop at the first report

    def on_match(_id: int, start: int, _end: int, _f: int, _c: object) -> bool:
        if not found or start < found[0]:
            found[:] = [start]
        return anywhere

    while n < limit and pos <= size:
        if n and time.monotonic() > deadline:  # up to `limit` linear passes: bound them too
            raise _out_of_time("signature verification")
        found.clear()
        try:
            hsdb.scan(view[pos:], on_match)
        except hyperscan.ScanTerminated:
            pass
        if not found or pos + found[0] > hi:
            break
        n += 1
        pos += found[0] + 1
    return n


def _dedupe(hits: Iterable[Hit]) -> list[Hit]:
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.name not in seen:
            seen.add(h.name)
            out.append(h)
    return out
