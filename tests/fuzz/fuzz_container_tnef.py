"""Fuzz our TNEF (winmail.dat) reader: any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import tnef

MAGIC = b"\x78\x9f\x3e\x22\x01\x00"


def TestOneInput(data: bytes) -> None:
    check_members(tnef.walk(MAGIC + data, "winmail.dat", budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("tnef"))
