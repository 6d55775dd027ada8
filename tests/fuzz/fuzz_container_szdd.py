"""Fuzz our SZDD/KWAJ decoder: any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import szdd

MAGIC = b"SZDD\x88\xf0\x27\x33"


def TestOneInput(data: bytes) -> None:
    check_members(szdd.walk(MAGIC + data, "a.ex_", budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("szdd"))
