"""UPX-packed executables: placeholder until the NRV decompressors land."""

from __future__ import annotations

from ..limits import ScanBudget


def unpack(data: bytes, budget: ScanBudget) -> tuple[bytes, str | None] | None:
    return None
