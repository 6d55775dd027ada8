"""Not yet implemented: yields an error member so the scan says so."""

from __future__ import annotations

from collections.abc import Iterator

from ..limits import ScanBudget
from ._base import Member


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    yield Member("(ole2)", None, error="ole2 not supported yet")
