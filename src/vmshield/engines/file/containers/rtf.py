"""RTF embedded objects: each \\objdata group, hex-decoded, then its OLE1 object ([MS-OLEDS]
2.2.4: version, format, class name, topic, item, native data). A "Package" object carries a file
(Ole10Native: label, path, data); other classes carry an OLE2 document, which the scanner
recurses into.

Our own linear-time extractor: oletools' rtfobj copes with more obfuscation but takes minutes on a
large RTF, which an attacker controls. Control words and nested groups inside the hex are
skipped, as Word does, so the usual obfuscations still decode."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names

MAX_OBJECTS = 1000
_OBJDATA = re.compile(rb"\\objdata(?![a-zA-Z])", re.I)
_BRACE = re.compile(rb"[{}]")
_CTRL = re.compile(rb"\\[a-zA-Z]{1,32}-?\d{0,10} ?|\\.")
_NOT_HEX = re.compile(rb"[^0-9a-fA-F]+")
_IGNORABLE = re.compile(rb"\{\\\*[^{}]*\}")  # innermost "{\* ...}" group: readers skip it


def _group_end(data: bytes, start: int) -> int:
    """Index of the brace closing the group that `start` is in (or the end of the data)."""
    depth = 0
    for m in _BRACE.finditer(data, start):
        if m.group() == b"{":
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                return m.start()
    return len(data)


def _lstr(buf: bytes, pos: int) -> tuple[bytes, int]:
    n = struct.unpack_from("<I", buf, pos)[0]
    if n > 4096:
        raise ValueError("OLE1 string too long")
    return buf[pos + 4 : pos + 4 + n].split(b"\x00", 1)[0], pos + 4 + n


def parse_ole1(buf: bytes) -> tuple[str, bytes]:
    """(class name, native data) of an OLE1 embedded object."""
    _ver, fmt = struct.unpack_from("<II", buf, 0)
    if fmt != 2:
        raise ValueError(f"OLE1 format {fmt} is not an embedded object")
    cls, pos = _lstr(buf, 8)
    _topic, pos = _lstr(buf, pos)
    _item, pos = _lstr(buf, pos)
    size = struct.unpack_from("<I", buf, pos)[0]
    native = buf[pos + 4 : pos + 4 + size]
    return cls.decode("latin-1"), native


def package_file(native: bytes) -> tuple[str, bytes] | None:
    """Ole10Native (with or without its leading size): flags, label, path, temp path, data."""
    from .ole2 import parse_ole10native

    if native[:2] == b"\x02\x00":
        native = struct.pack("<I", len(native)) + native
    return parse_ole10native(native)


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    uniq = unique_names()
    cap = member_cap(budget)
    for n, m in enumerate(_OBJDATA.finditer(data), 1):
        budget.check_time()
        if n > MAX_OBJECTS:
            raise LimitExceeded("max_files", f"RTF has more than {MAX_OBJECTS} objects")
        end = _group_end(data, m.end())
        if (end - m.end()) // 2 > cap:
            raise LimitExceeded("max_file_size", f"RTF object of ~{(end - m.end()) // 2} bytes")
        text = data[m.end() : end]
        for _ in range(64):  # nested ignorable groups hide hex digits that are not data
            text, k = _IGNORABLE.subn(b"", text)
            if not k:
                break
        text = _CTRL.sub(b"", text)
        hexdigits = _NOT_HEX.sub(b"", text)
        blob = bytes.fromhex(hexdigits[: len(hexdigits) & ~1].decode("ascii"))
        label = f"object{n}"
        try:
            cls, native = parse_ole1(blob)
        except (ValueError, struct.error):
            # Not a well-formed OLE1 object: scan the decoded bytes as they are.
            yield Member(uniq(f"{label}.bin"), blob)
            continue
        pkg = package_file(native) if cls.lower() == "package" else None
        if pkg is not None:
            yield Member(uniq(sanitize_name(pkg[0], label)), pkg[1])
        else:
            yield Member(uniq(sanitize_name(f"{label}-{cls or 'ole'}", label)), native)
