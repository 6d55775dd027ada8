"""Fuzz the phishtank URL feed parser and the build: bad lines are rejected, never raised."""

from __future__ import annotations

from tests.fuzz._harness import main
from tests.fuzz._url_feeds import check_feed


def TestOneInput(data: bytes) -> None:
    check_feed("phishtank", data)


if __name__ == "__main__":
    main(TestOneInput)
