"""Containers and carriers: everything that holds other files, one level at a time.

`open_container(data, name, budget)` returns None when the bytes are not a container or carrier
(detected by content, never by extension), else an iterator of `Member`s. The scanner recurses
into members and handles depth; the budget bounds everything here: no member is inflated past
what the limits allow, and bombs raise `LimitExceeded` naming the limit.

Nothing here writes files: every format is read from memory.

Formats (detected by content):
  zip family (OOXML, ODF, JAR, APK): own walker; stored, deflate, deflate64, bzip2, LZMA;
      overlapping entries refused (`zip_overlap`); encrypted members reported; a bomb member is
      skipped and its siblings still yielded before the limit is raised
  tar, 7z, RAR 4/5, cab, ISO 9660, cpio (odc, newc, crc, binary): libarchive, streamed
  gzip, bzip2, xz, lzma-alone: bounded inflation; a compressed tar is one level
  ARJ: own reader (methods 0-4)
  carriers: MIME mail (base64, quoted-printable, uuencode), BinHex 4.0, HTML data: URIs, RTF
      objdata (OLE1 / Package), OLE2 (streams, Ole10Native, VBA source via olevba), PDF
      (attachments, decoded streams; encrypted ones reported), TNEF, SZDD/KWAJ, CHM (both
      sections; the LZX one by our own decoder, lzx.py)
  executables: archives carved past the header (zip, 7z, rar, cab); UPX-packed PE (NRV2B/2D/2E)
Not handled: UPX LZMA / filters /
ELF, zip64 rebuild in disinfection, RAR/7z/ISO encryption beyond "encrypted" flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, sanitize_name

__all__ = ["Member", "open_container", "detect", "sanitize_name", "LimitExceeded"]

Walker = Callable[[bytes, str, ScanBudget], Iterator[Member]]


def _zip(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    from . import zipfmt

    return zipfmt.walk(data, budget)


def _libarchive(fmt: str, skippable: bool = False) -> Walker:
    def w(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
        from . import archive

        return archive.walk(data, budget, fmt, skippable)

    return w


def _stream(kind: str) -> Walker:
    def w(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
        from . import streams

        return streams.walk(data, name, budget, kind)

    return w


def _lazy(module: str) -> Walker:
    def w(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
        import importlib

        mod = importlib.import_module(f"{__name__}.{module}")
        return mod.walk(data, name, budget)  # type: ignore[no-any-return]

    return w


def _is_cpio(data: bytes) -> bool:
    return data[:6] in (b"070707", b"070701", b"070702") or data[:2] in (b"\xc7\x71", b"\x71\xc7")


def detect(data: bytes) -> str | None:
    """Name the container or carrier format of `data` from its content, or None."""
    h = data[:8]
    if h[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if h[:2] == b"\x1f\x8b":
        return "gzip"
    if h[:3] == b"BZh" and len(data) > 10 and data[4:10] == b"1AY&SY":
        return "bzip2"
    if h[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if h[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if h[:7] in (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01"):
        return "rar"
    if h[:4] == b"MSCF":
        return "cab"
    if h[:2] == b"\x60\xea":
        return "arj"
    if len(data) > 0x8006 and data[0x8001:0x8006] == b"CD001":
        return "iso9660"
    if _is_cpio(data):
        return "cpio"
    if h[:2] == b"\x1f\x9d":
        return "compress"
    if h[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return "ole2"
    if h[:4] == b"\x78\x9f\x3e\x22":
        return "tnef"
    if h[:8] == b"SZDD\x88\xf0\x27\x33" or h[:8] == b"KWAJ\x88\xf0\x27\xd1":
        return "szdd"
    if h[:4] == b"ITSF":
        return "chm"
    if (
        h[:3] == b"\x5d\x00\x00"
        and len(data) > 13
        and data[5:13] in (b"\xff" * 8,)
        or _is_lzma_alone(data)
    ):
        return "lzma"
    from .streams import is_tar

    if is_tar(data):
        return "tar"
    if h[:2] == b"MZ" or h[:4] == b"\x7fELF":
        return "executable"
    head = data[:4096]
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if head.lstrip()[:5] == b"{\\rtf":
        return "rtf"
    from . import text

    return text.detect(head, data)


def _is_lzma_alone(data: bytes) -> bool:
    # lzma-alone: properties byte < 225, dictionary size a power of two (or 2^n+2^(n-1)), then size.
    if len(data) < 13 or data[0] >= 225:
        return False
    d = int.from_bytes(data[1:5], "little")
    if d < 4096 or d > 1 << 30 or (d & (d - 1)) and (d & (d - 1)) & ((d & (d - 1)) - 1):
        return False
    size = int.from_bytes(data[5:13], "little")
    return data[0] == 0x5D and (size == (1 << 64) - 1 or size < 1 << 40)


_WALKERS: dict[str, Walker] = {
    "zip": _zip,
    "gzip": _stream("gzip"),
    "bzip2": _stream("bzip2"),
    "xz": _stream("xz"),
    "lzma": _stream("lzma"),
    "7z": _libarchive("7zip"),
    "rar": _libarchive("all"),
    "cab": _libarchive("cab"),
    "arj": _lazy("arj"),
    "iso9660": _libarchive("iso9660", skippable=True),
    "cpio": _libarchive("cpio", skippable=True),
    "tar": _libarchive("tar", skippable=True),
    "compress": _libarchive("all"),
    "ole2": _lazy("ole2"),
    "tnef": _lazy("tnef"),
    "szdd": _lazy("szdd"),
    "chm": _lazy("chm"),
    "executable": _lazy("executable"),
    "pdf": _lazy("pdf"),
    "rtf": _lazy("rtf"),
    "mime": _lazy("text"),
    "uuencode": _lazy("text"),
    "binhex": _lazy("text"),
    "html": _lazy("text"),
}


def open_container(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member] | None:
    """Members of `data` if it is a container or carrier, else None.

    The iterator raises `LimitExceeded` for bombs and over-size members; a malformed container
    yields what could be read, then a Member with `error` set.
    """
    kind = detect(data)
    if kind is None:
        return None
    walker = _WALKERS[kind]
    return _guard(walker(data, name, budget), kind)


def _guard(it: Iterator[Member], kind: str) -> Iterator[Member]:
    """A walker bug or a library exception on hostile input becomes an error member, not a crash."""
    try:
        for m in it:
            m.name = sanitize_name(m.name)  # defence in depth: every walker already does this
            yield m
    except LimitExceeded:
        raise
    except (MemoryError, RecursionError) as exc:
        yield Member(f"({kind})", None, error=f"{type(exc).__name__} while reading {kind}")
    except Exception as exc:  # noqa: BLE001 - third-party parsers raise anything on bad input
        yield Member(f"({kind})", None, error=f"malformed {kind}: {type(exc).__name__}: {exc}")
