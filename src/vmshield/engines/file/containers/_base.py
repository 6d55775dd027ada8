"""What every container walker shares: the member model, name sanitising, bounded decompression."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..limits import LimitExceeded, ScanBudget

CHUNK = 256 * 1024  # input fed per step
OUT_CHUNK = 1024 * 1024  # output produced per step: limits are checked at least this often


@dataclass
class Member:
    """One file found inside a container or carrier.

    `name` is sanitised: relative, '/'-separated, no '..', no NUL, no control characters.
    `data` is None when the member is encrypted or could not be read (`error` says why).
    """

    name: str
    data: bytes | None
    encrypted: bool = False
    error: str | None = None


class NotContainer(Exception):
    """The bytes looked like a format at first glance but are not one (walker declines)."""


_CTRL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


def sanitize_name(raw: str | bytes, fallback: str = "member") -> str:
    """Make an archive member name safe to show and to use under a private directory.

    Absolute paths, drive letters, '..' and '.' components, NUL and control characters are
    removed; backslashes are separators (Windows archivers write them).
    """
    name = _clean(raw)
    # The fallback is often built from attacker data too (a MIME subtype): clean it the same way.
    return name or _clean(fallback) or "member"


def _clean(raw: str | bytes) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    raw = raw.split("\x00", 1)[0]  # C tools stop at NUL; an attacker hides a suffix after it
    raw = raw.replace("\\", "/")
    raw = _DRIVE.sub("", raw)
    raw = _CTRL.sub("_", raw)
    parts = [p for p in raw.split("/") if p not in ("", ".", "..")]
    name = "/".join(parts)
    return name[:1024]


def unique_names() -> Callable[[str], str]:
    """Returns a function that de-duplicates names (two members called 'a' become 'a' and 'a~1')."""
    seen: dict[str, int] = {}

    def uniq(name: str) -> str:
        n = seen.get(name)
        if n is None:
            seen[name] = 0
            return name
        seen[name] = n + 1
        return f"{name}~{n + 1}"

    return uniq


def member_cap(budget: ScanBudget) -> int:
    return budget.remaining_member_size()


def check_declared(budget: ScanBudget, compressed: int, declared: int) -> None:
    """Refuse a member before decompressing anything when its declared size is already a bomb."""
    budget.check_time()
    cap = member_cap(budget)
    if declared > cap:
        raise LimitExceeded("max_file_size", f"member declares {declared} bytes > {cap} allowed")
    budget.check_ratio(compressed, declared)


def bounded_stream(
    chunks: Iterator[bytes],
    budget: ScanBudget,
    compressed_size: Callable[[], int],
) -> bytes:
    """Collect decompressed chunks, stopping as soon as a limit says so.

    `compressed_size()` tells how much input has been consumed so far, so the ratio is checked on
    what was actually produced, not only on what the header declared.
    """
    cap = member_cap(budget)
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > cap:
            raise LimitExceeded("max_file_size", f"member expands past {cap} bytes")
        budget.check_ratio(compressed_size(), len(out))
        budget.check_time()
    return bytes(out)


def zlib_like(
    decomp_factory: Callable[[], object],
    data: bytes,
    budget: ScanBudget,
    *,
    multi: bool = False,
) -> tuple[bytes, str | None]:
    """Decompress with a zlib/bz2/lzma-style object, `max_length` bounded; never more than allowed.

    Returns (output, error). With `multi`, concatenated streams (gzip members, bzip2 streams) are
    followed as the command-line tools do.
    """
    cap = member_cap(budget)
    out = bytearray()
    pos = 0
    base = 0  # input consumed by earlier streams (multi), for the ratio
    d = decomp_factory()
    pending = b""
    while True:
        budget.check_time()
        if not pending:
            if pos >= len(data):
                break
            pending = data[pos : pos + CHUNK]
            pos += len(pending)
        try:
            if hasattr(d, "unconsumed_tail"):  # zlib
                piece = d.decompress(pending, OUT_CHUNK)  # type: ignore[attr-defined]
                pending = d.unconsumed_tail  # type: ignore[attr-defined]
            else:  # bz2 / lzma keep their own input buffer
                piece = d.decompress(pending, OUT_CHUNK)  # type: ignore[attr-defined]
                pending = b""
                while not d.eof and d.needs_input is False:  # type: ignore[attr-defined]
                    out += piece
                    if len(out) > cap:
                        raise LimitExceeded("max_file_size", f"member expands past {cap} bytes")
                    budget.check_ratio(base + pos, len(out))
                    budget.check_time()
                    piece = d.decompress(b"", OUT_CHUNK)  # type: ignore[attr-defined]
        except LimitExceeded:
            raise
        except Exception as exc:  # zlib.error, OSError, LZMAError
            return bytes(out), f"corrupt stream: {exc}"
        out += piece
        if len(out) > cap:
            raise LimitExceeded("max_file_size", f"member expands past {cap} bytes")
        budget.check_ratio(base + pos - len(pending), len(out))
        if getattr(d, "eof", False):
            rest = getattr(d, "unused_data", b"") + pending + data[pos:]
            if multi and rest.strip(b"\x00"):
                d = decomp_factory()
                base += len(data) - len(rest)
                data, pos, pending = rest, 0, b""
                continue
            return bytes(out), None
    if not getattr(d, "eof", True):
        return bytes(out), "truncated stream"
    return bytes(out), None
