"""Everything libarchive reads: tar, 7z, rar (4 and 5), cab, arj, ISO 9660, cpio (all variants),
lha, xar, and those wrapped in gzip/bzip2/xz/lzma/compress filters."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import libarchive
from libarchive import ffi
from libarchive.exception import ArchiveError

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names

try:  # libarchive >= 3.2; libarchive-c does not wrap them
    _is_encrypted = ffi.libarchive.archive_entry_is_encrypted
    _is_encrypted.argtypes = [ctypes.c_void_p]
    _is_encrypted.restype = ctypes.c_int
except AttributeError:  # pragma: no cover
    _is_encrypted = None


def _encrypted(entry: libarchive.ArchiveEntry) -> bool:
    return bool(_is_encrypted and _is_encrypted(entry._entry_p) > 0)


def walk(
    data: bytes, budget: ScanBudget, fmt: str = "all", skippable: bool = False
) -> Iterator[Member]:
    """`skippable`: the archive is not compressed (tar, cpio, ISO), so passing over an over-size
    member costs nothing; it is skipped, its siblings are read, and the limit raised at the end.
    Compressed or solid archives stop at the first limit: skipping would mean inflating it."""
    uniq = unique_names()
    total_out = 0
    n = 0
    deferred: LimitExceeded | None = None
    try:
        with libarchive.memory_reader(data, format_name=fmt, filter_name="all") as archive:
            for entry in archive:
                budget.check_time()
                n += 1
                if n > budget.limits.max_files:
                    raise LimitExceeded(
                        "max_files", f"archive has more than {budget.limits.max_files} entries"
                    )
                if not entry.isreg:
                    continue  # directories, links and devices carry no content
                name = uniq(sanitize_name(entry.pathname or "", fallback=f"member{n}"))
                if _encrypted(entry):
                    yield Member(name, None, encrypted=True)
                    continue
                cap = member_cap(budget)
                declared = entry.size or 0
                if declared > cap:
                    exc = LimitExceeded(
                        "max_file_size", f"{name}: declares {declared} bytes > {cap} allowed"
                    )
                    if not skippable:
                        raise exc
                    deferred = deferred or exc
                    continue
                out = bytearray()
                err: str | None = None
                try:
                    for block in entry.get_blocks(65536):
                        out += block
                        if len(out) > cap:
                            raise LimitExceeded("max_file_size", f"member expands past {cap} bytes")
                        # Per-member compressed sizes are not exposed (solid 7z/rar): bound the whole
                        # archive's expansion instead, which is what a nested bomb inflates.
                        budget.check_ratio(len(data), total_out + len(out))
                        budget.check_time()
                except ArchiveError as exc:
                    msg = str(exc)
                    if "ncrypt" in msg or "assphrase" in msg:
                        yield Member(name, None, encrypted=True)
                        continue
                    err = f"read error: {msg}"
                total_out += len(out)
                yield Member(name, bytes(out) if out or err is None else None, error=err)
                if err:
                    return
    except ArchiveError as exc:
        yield Member("(archive)", None, error=f"malformed or truncated archive: {exc}")
    if deferred is not None:
        raise deferred
