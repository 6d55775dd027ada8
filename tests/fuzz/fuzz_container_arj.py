"""Fuzz our ARJ reader and its LZ/Huffman decoders: any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import arj

MAGIC = b"\x60\xea"


def TestOneInput(data: bytes) -> None:
    check_members(arj.walk(MAGIC + data, "x.arj", budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("arj"))
