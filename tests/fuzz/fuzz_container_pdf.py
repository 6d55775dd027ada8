"""Fuzz PDF attachments and streams (pypdf): any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import open_container

MAGIC = b"%PDF-1.7\n"


def TestOneInput(data: bytes) -> None:
    check_members(open_container(MAGIC + data, "a.pdf", budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("pdf"))
