"""OLE2 compound documents (Office 97 and others): every stream, OLE1 native embedded objects
(Ole10Native, how "packages" carry a file), and VBA macro source decompressed by oletools."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import olefile

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names

MAX_STREAMS = 10_000


def parse_ole10native(data: bytes) -> tuple[str, bytes] | None:
    """\\x01Ole10Native: size, label, path, reserved, temp path, data size, data ([MS-OLEDS] 2.3.6)."""
    try:
        pos = 4
        if data[pos : pos + 2] != b"\x02\x00":
            # Some writers omit the flags word; then the native data is the whole stream.
            return None
        pos += 2
        label_end = data.index(b"\x00", pos)
        label = data[pos:label_end]
        pos = data.index(b"\x00", label_end + 1) + 1  # original path
        pos += 4  # reserved
        tlen = struct.unpack_from("<I", data, pos)[0]
        pos += 4 + tlen  # temp path
        dlen = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        body = data[pos : pos + dlen]
        if len(body) != dlen:
            return None
        return label.decode("latin-1"), body
    except (ValueError, struct.error):
        return None


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    try:
        ole = olefile.OleFileIO(io.BytesIO(data), raise_defects=olefile.DEFECT_FATAL)
    except Exception as exc:  # noqa: BLE001 - olefile raises OSError and others on bad input
        yield Member("(ole2)", None, error=f"malformed OLE2: {exc}")
        return
    # A header declaring more mini-FAT or mini-stream than the file holds makes olefile walk
    # millions of sectors (found by fuzzing): such a file is malformed, say so and stop.
    minifat = ole.num_mini_fat_sectors * ole.sectorsize
    if minifat > len(data) or ole.root.size > len(data) * 2:
        ole.close()
        yield Member(
            "(ole2)",
            None,
            error=f"malformed OLE2: mini-FAT of {minifat} bytes in a {len(data)}-byte file",
        )
        return
    uniq = unique_names()
    with ole:
        entries = ole.listdir(streams=True, storages=False)
        if len(entries) > MAX_STREAMS:
            raise LimitExceeded("max_files", f"OLE2 file has {len(entries)} streams")
        for path in entries:
            budget.check_time()
            sname = uniq(sanitize_name("/".join(path), "stream"))
            try:
                size = ole.get_size(path)
                if size > member_cap(budget):
                    raise LimitExceeded("max_file_size", f"stream {sname!r} of {size} bytes")
                body = ole.openstream(path).read()
            except LimitExceeded:
                raise
            except Exception as exc:  # noqa: BLE001
                yield Member(sname, None, error=f"unreadable stream: {exc}")
                continue
            yield Member(sname, body)
            if path[-1] == "\x01Ole10Native":
                native = parse_ole10native(body)
                if native:
                    yield Member(
                        uniq(sanitize_name(sname.rsplit("/", 1)[0] + "/" + native[0], "native")),
                        native[1],
                    )
    # olevba re-parses the file leniently, and a crafted mini-FAT makes that take minutes (found by
    # fuzzing): run it only when our strict parse found a VBA project ("VBA/dir").
    if any(len(p) >= 2 and p[-1].lower() == "dir" and p[-2].lower() == "vba" for p in entries):
        yield from _vba(data, budget, uniq)


def _vba(data: bytes, budget: ScanBudget, uniq: object) -> Iterator[Member]:
    """VBA modules are stored compressed ([MS-OVBA]); give the scanner their source text."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # olevba uses deprecated pyparsing names at import
            from oletools.olevba import VBA_Parser
    except ImportError:  # pragma: no cover
        return
    try:
        vp = VBA_Parser("doc", data=data)
        if not vp.detect_vba_macros():
            return
        for _f, stream_path, vba_name, code in vp.extract_macros():
            budget.check_time()
            if isinstance(code, str):
                code = code.encode("utf-8", "replace")
            yield Member(uniq(sanitize_name(f"_VBA_SOURCE/{vba_name or stream_path}", "vba")), code)  # type: ignore[operator]
    except LimitExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - olevba's own parser errors
        yield Member("(vba)", None, error=f"VBA project unreadable: {exc}")
