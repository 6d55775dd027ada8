"""Fuzz our zip walker (central directory, overlap, bounded inflate): any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import zipfmt

MAGIC = b"PK\x03\x04"


def TestOneInput(data: bytes) -> None:
    check_members(zipfmt.walk(MAGIC + data, budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("zip"))
