"""Fuzz our BinHex 4.0 decoder: any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import text

MAGIC = b"(This file must be converted with BinHex 4.0)\n:"


def TestOneInput(data: bytes) -> None:
    check_members(text.walk(MAGIC + data, "a.hqx", budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("binhex"))
