"""Not yet implemented: yields an error member so the scan says so."""

from __future__ import annotations

from collections.abc import Iterator

from ..limits import ScanBudget
from ._base import Member


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    yield Member("(executable)", None, error="executable not supported yet")
