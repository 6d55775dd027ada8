"""Fuzz gzip/bzip2/xz streams (first input byte picks the format): any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import streams

_KINDS = [
    (b"\x1f\x8b", "gzip"),
    (b"BZh91AY&SY", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00\x80\x00", "lzma"),
]


def _stream_kind(blob: bytes) -> str:
    return _KINDS[blob[0] % len(_KINDS)][1] if blob else "gzip"


def _stream_prefix(blob: bytes) -> bytes:
    return _KINDS[blob[0] % len(_KINDS)][0] + blob[1:] if blob else blob


def TestOneInput(data: bytes) -> None:
    check_members(streams.walk(_stream_prefix(data), "a.gz", budget(), _stream_kind(data)))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("gzip"))
