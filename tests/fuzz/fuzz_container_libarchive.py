"""Fuzz tar, 7z, rar, cab, ISO 9660, cpio through libarchive (first byte picks the format): any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import open_container

_MAGICS = [
    b"7z\xbc\xaf\x27\x1c\x00\x04",
    b"Rar!\x1a\x07\x00",
    b"Rar!\x1a\x07\x01\x00",
    b"MSCF\x00\x00\x00\x00",
    b"070701",
    b"070707",
    b"\xc7\x71",
]


def _archive_prefix(blob: bytes) -> bytes:
    if not blob:
        return blob
    k = blob[0] % (len(_MAGICS) + 1)
    if k == len(_MAGICS):  # a tar header: name, then "ustar" at 257
        return blob[1:258].ljust(257, b"\x00") + b"ustar\x0000" + blob[258:]
    return _MAGICS[k] + blob[1:]


def TestOneInput(data: bytes) -> None:
    check_members(open_container(_archive_prefix(data), "a", budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("libarchive"))
