"""Fuzz RTF embedded objects (oletools rtfobj): any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import open_container

MAGIC = b"{\\rtf1 "


def TestOneInput(data: bytes) -> None:
    check_members(open_container(MAGIC + data, "a.rtf", budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("rtf"))
