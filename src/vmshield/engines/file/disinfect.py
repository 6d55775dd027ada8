"""Disinfection where it is real: rebuild a zip-family or tar container without its infected
members (the other members' bytes copied, never recompressed), and remove the VBA project from an
OOXML document whose detection is in vbaProject.bin. Anything else "cannot be disinfected", and
the caller applies its fallback (delete, quarantine, block).

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import struct
import tarfile
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field

from .containers import detect, sanitize_name
from .containers._base import unique_names
from .containers.streams import is_tar
from .containers.zipfmt import (
    ZipDirectory,
    ZipEntry,
    ZipFormatError,
    check_overlap,
    extract,
    read_directory,
)
from .limits import LimitExceeded, Limits, ScanBudget

CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
VBA_REL = "http://schemas.microsoft.com/office/2006/relationships/vbaProject"
MAX_DEPTH = 17  # nested containers cleaned in place, as deep as the scanner's default recursion
MAX_XML = 16 * 1024 * 1024  # a content-types or rels part larger than this is not an Office file


@dataclass
class DisinfectResult:
    ok: bool
    data: bytes | None
    reason: str
    removed: list[str] = field(default_factory=list)  # members taken out (top-level names)


def cannot(reason: str) -> DisinfectResult:
    return DisinfectResult(False, None, f"cannot be disinfected: {reason}")


def disinfect(data: bytes, infected_inner_paths: list[str]) -> DisinfectResult:
    """Remove what the detections point at. `infected_inner_paths` are the scanner's inner paths
    ("dir/x.exe", "a.zip//b.exe"); "" means the file itself is the detection."""
    return _disinfect(data, infected_inner_paths, 0)


def _disinfect(data: bytes, infected_inner_paths: list[str], depth: int) -> DisinfectResult:
    if not infected_inner_paths:
        return DisinfectResult(True, data, "nothing to remove")
    if any(p == "" for p in infected_inner_paths):
        return cannot("the file itself is infected, not a member of it")
    # Only the top-level member can be taken out; a nested detection removes the member holding it.
    tops = sorted({p.split("//", 1)[0] for p in infected_inner_paths})
    kind = detect(data)
    try:
        if kind == "zip":
            return _zip(data, tops, infected_inner_paths, depth)
        if kind == "tar":
            return _tar(data, tops, None, infected_inner_paths, depth)
        if kind in ("gzip", "bzip2", "xz"):
            raw = _decompress(data, kind)
            if raw is None or not is_tar(raw):
                return cannot(f"{kind} stream holds a single file, not an archive")
            return _tar(raw, tops, kind, infected_inner_paths, depth)
    except (
        ZipFormatError,
        tarfile.TarError,
        ET.ParseError,
        struct.error,
        ValueError,
        OSError,
        EOFError,
        zlib.error,
        lzma.LZMAError,
    ) as exc:
        return cannot(f"container could not be rebuilt: {exc}")
    except Exception as exc:  # noqa: BLE001 - hostile input never turns a disinfection into a crash
        return cannot(f"container could not be rebuilt: {type(exc).__name__}: {exc}")
    return cannot(f"{kind or 'this file type'} cannot be rebuilt without its infected part")


# --- zip family --------------------------------------------------------------------------------


def _names(directory: ZipDirectory) -> dict[str, ZipEntry]:
    """Map the scanner's member names (sanitised, de-duplicated, as `zipfmt.walk` yields them)."""
    uniq = unique_names()
    out: dict[str, ZipEntry] = {}
    for e in directory.entries:
        if not e.is_dir:
            out[uniq(sanitize_name(e.name))] = e
    return out


def _zip(data: bytes, tops: list[str], paths: list[str], depth: int) -> DisinfectResult:
    directory = read_directory(data)
    if directory.base:
        return cannot("self-extracting archive (data before the zip)")
    try:
        # Entries sharing bytes: removing one would leave its content under another name.
        check_overlap(directory)
    except LimitExceeded as exc:
        return cannot(f"overlapping zip entries ({exc.detail})")
    by_name = _names(directory)
    missing = [t for t in tops if t not in by_name]
    if missing:
        return cannot(f"member {missing[0]!r} not found in the archive")
    vba = [t for t in tops if posixpath.basename(t).lower() == "vbaproject.bin"]
    # A detection deeper inside a member that is itself a zip or tar: clean that member in turn
    # (it is recompressed; everything else keeps its bytes). Otherwise the member goes.
    cleaned: dict[str, bytes] = {}
    if depth < MAX_DEPTH:
        for t in tops:
            inner = [p.split("//", 1)[1] for p in paths if p.startswith(t + "//")]
            if t in vba or not inner or t in paths:
                continue
            body, err = extract(data, by_name[t], ScanBudget(Limits()))
            if body is None or err:
                continue
            r = _disinfect(body, inner, depth + 1)
            if r.ok and r.data is not None:
                cleaned[t] = r.data
    drop = {id(by_name[t]) for t in tops if t not in cleaned}
    removed = [t for t in tops if t not in cleaned]
    replace: dict[str, bytes] = dict(cleaned)
    note = "".join(f"; cleaned inside {t}" for t in cleaned)
    if vba and "[Content_Types].xml" in by_name:
        parts, extra_drop = _strip_vba(data, by_name, vba)
        replace.update(parts)
        for n in extra_drop:
            if n in by_name:
                drop.add(id(by_name[n]))
                removed.append(n)
        note += "; VBA project removed, relationships and content types updated"
    out = _rebuild_zip(data, directory, drop, {id(by_name[k]): v for k, v in replace.items()})
    what = f"removed {', '.join(removed)}" if removed else "nothing removed at this level"
    return DisinfectResult(True, out, f"{what}{note}", removed + [f"{t}//..." for t in cleaned])


def _raw_record(data: bytes, e: ZipEntry) -> bytes:
    """The local header, compressed data and data descriptor of one entry, exactly as stored."""
    end = e.data_offset + e.comp_size
    if e.data_offset < 0 or end > len(data):
        raise ValueError(f"member {e.name!r} is truncated")
    if e.flags & 0x08:  # data descriptor: optional signature, CRC, sizes (8 bytes each in zip64)
        sig = data[end : end + 4] == b"PK\x07\x08"
        zip64 = e.comp_size >= 0xFFFFFFFF or e.size >= 0xFFFFFFFF
        end += (4 if sig else 0) + 4 + (16 if zip64 else 8)
    return data[e.local_offset : end]


def _rebuild_zip(
    data: bytes, directory: ZipDirectory, drop: set[int], replace: dict[int, bytes]
) -> bytes:
    out = bytearray()
    central = bytearray()
    count = 0
    for e in directory.entries:
        if id(e) in drop:
            continue
        cen = bytearray(data[e.cen_offset : e.cen_offset + e.cen_len])
        if len(cen) != e.cen_len:
            raise ValueError(f"central record of {e.name!r} is truncated")
        offset = len(out)
        if id(e) in replace:
            body = replace[id(e)]
            comp = zlib.compressobj(9, zlib.DEFLATED, -15)
            cdata = comp.compress(body) + comp.flush()
            nb = e.raw_name
            crc = zlib.crc32(body)
            out += struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                20,
                e.flags & 0x800,
                8,
                0,
                0x21,
                crc,
                len(cdata),
                len(body),
                len(nb),
                0,
            )
            out += nb + cdata
            # Central record: method, CRC and sizes follow the new content; no extra field kept.
            struct.pack_into(
                "<HHHHIII", cen, 8, e.flags & 0x800, 8, 0, 0x21, crc, len(cdata), len(body)
            )
            struct.pack_into("<HH", cen, 30, 0, 0)
            cen = cen[: 46 + len(nb)]
        else:
            out += _raw_record(data, e)
        if offset >= 0xFFFFFFFF:
            raise ValueError("rebuilt archive needs zip64 offsets")
        if struct.unpack_from("<I", cen, 42)[0] == 0xFFFFFFFF:
            raise ValueError("zip64 member offsets are not rewritten")
        struct.pack_into("<I", cen, 42, offset)
        central += cen
        count += 1
    cd_off = len(out)
    out += central
    if count >= 0xFFFF or cd_off >= 0xFFFFFFFF:
        raise ValueError("rebuilt archive would need zip64 records")
    out += struct.pack(
        "<4sHHHHIIH",
        b"PK\x05\x06",
        0,
        0,
        count,
        count,
        len(central),
        cd_off,
        len(directory.comment),
    )
    out += directory.comment
    return bytes(out)


def _inflate_small(data: bytes, e: ZipEntry) -> bytes:
    if e.size > MAX_XML or e.data_offset < 0:
        raise ValueError(f"{e.name} is not a plausible OOXML part")
    raw = data[e.data_offset : e.data_offset + e.comp_size]
    if e.method == 0:
        return raw
    if e.method == 8:
        d = zlib.decompressobj(-15)
        out = d.decompress(raw, MAX_XML)
        if d.unconsumed_tail:
            raise ValueError(f"{e.name} inflates past {MAX_XML} bytes")
        return out
    raise ValueError(f"{e.name}: compression method {e.method}")


def _rels_path(part: str) -> str:
    d, b = posixpath.split(part)
    return posixpath.join(d, "_rels", b + ".rels")


def _strip_vba(
    data: bytes, by_name: dict[str, ZipEntry], vba_parts: list[str]
) -> tuple[dict[str, bytes], list[str]]:
    """Drop vbaProject.bin's relationships and content-type overrides; return changed parts and
    the parts that belong only to the VBA project (its own rels, vbaData.xml) to drop too."""
    ET.register_namespace("", CT_NS)
    replace: dict[str, bytes] = {}
    extra: list[str] = []
    targets = {"/" + p.lstrip("/") for p in vba_parts}
    # Parts the VBA project refers to (vbaData.xml) go with it.
    for p in vba_parts:
        own = _rels_path(p)
        if own in by_name:
            extra.append(own)
            root = ET.fromstring(_inflate_small(data, by_name[own]))
            for rel in root.findall(f"{{{REL_NS}}}Relationship"):
                tgt = posixpath.normpath(
                    posixpath.join(posixpath.dirname(p), rel.get("Target", ""))
                )
                if tgt in by_name and tgt != p:
                    extra.append(tgt)
                    targets.add("/" + tgt)
    # Content types: remove the overrides of every removed part.
    ct = ET.fromstring(_inflate_small(data, by_name["[Content_Types].xml"]))
    for ov in list(ct.findall(f"{{{CT_NS}}}Override")):
        if ov.get("PartName") in targets:
            ct.remove(ov)
    replace["[Content_Types].xml"] = _xml(ct)
    # Relationships anywhere that point at the removed parts (normally word/_rels/document.xml.rels).
    ET.register_namespace("", REL_NS)
    for name, e in by_name.items():
        if not name.endswith(".rels") or name in extra:
            continue
        root = ET.fromstring(_inflate_small(data, e))
        src_dir = posixpath.dirname(posixpath.dirname(name))  # "word/_rels/x.rels" -> "word"
        changed = False
        for rel in list(root.findall(f"{{{REL_NS}}}Relationship")):
            tgt = rel.get("Target", "")
            full = (
                tgt
                if tgt.startswith("/")
                else "/" + posixpath.normpath(posixpath.join(src_dir, tgt))
            )
            if full in targets or rel.get("Type") == VBA_REL:
                root.remove(rel)
                changed = True
        if changed:
            replace[name] = _xml(root)
    return replace, extra


def _xml(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True).replace(
        b"<?xml version='1.0' encoding='UTF-8'?>",
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
    )


# --- tar ---------------------------------------------------------------------------------------


def _decompress(data: bytes, kind: str) -> bytes | None:
    # Callers scanned this file already, under the limits; the size is bounded again here.
    cap = 1 << 30
    if kind == "gzip":
        d: object = zlib.decompressobj(16 + 15)
        out = d.decompress(data, cap)  # type: ignore[attr-defined]
    elif kind == "bzip2":
        out = bz2.BZ2Decompressor().decompress(data, cap)
    else:
        out = lzma.LZMADecompressor().decompress(data, cap)
    return out if len(out) < cap else None


def _tar(
    raw: bytes, tops: list[str], compression: str | None, paths: list[str], depth: int
) -> DisinfectResult:
    uniq = unique_names()
    members: list[tuple[str | None, int, int, tarfile.TarInfo]] = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        fmt, enc = tf.format, tf.encoding or "utf-8"
        for ti in tf:
            end = ti.offset_data + ((ti.size + 511) // 512) * 512 if ti.isreg() else ti.offset_data
            name = uniq(sanitize_name(ti.name)) if ti.isreg() else None
            members.append((name, ti.offset, end, ti))
    names = {m[0] for m in members}
    missing = [t for t in tops if t not in names]
    if missing:
        return cannot(f"member {missing[0]!r} not found in the archive")
    out = bytearray()
    removed: list[str] = []
    cleaned: list[str] = []
    for name, start, end, ti in members:
        if name not in tops:
            out += raw[start:end]  # headers and data exactly as they were
            continue
        inner = [p.split("//", 1)[1] for p in paths if p.startswith(f"{name}//")]
        if inner and name not in paths and depth < MAX_DEPTH:
            # The detection is inside this member (an archive): clean it and keep it.
            r = _disinfect(raw[ti.offset_data : ti.offset_data + ti.size], inner, depth + 1)
            if r.ok and r.data is not None:
                ti.size = len(r.data)
                out += ti.tobuf(fmt, enc, "surrogateescape")
                out += r.data + b"\x00" * (-len(r.data) % 512)
                cleaned.append(name)
                continue
        removed.append(name)  # type: ignore[arg-type]
    out += b"\x00" * 1024
    out += b"\x00" * (-len(out) % tarfile.RECORDSIZE)
    blob = bytes(out)
    if compression == "gzip":
        blob = gzip.compress(blob, mtime=0)
    elif compression == "bzip2":
        blob = bz2.compress(blob)
    elif compression == "xz":
        blob = lzma.compress(blob)
    what = f"removed {', '.join(removed)}" if removed else "nothing removed at this level"
    what += "".join(f"; cleaned inside {c}" for c in cleaned)
    return DisinfectResult(True, blob, what, removed + [f"{c}//..." for c in cleaned])
