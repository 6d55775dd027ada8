"""Fuzz MIME mail and uuencode extraction: any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

from tests.fuzz._containers import budget, check_members, seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import text

MAGIC = b"From: a@b\nSubject: x\nMIME-Version: 1.0\n"


def TestOneInput(data: bytes) -> None:
    check_members(text.walk(MAGIC + data, "a.eml", budget()))


if __name__ == "__main__":
    main(TestOneInput, seeds_for("mime"))
