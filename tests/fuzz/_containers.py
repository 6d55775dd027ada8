"""The checks every container fuzz target makes: any bytes give members or LimitExceeded, member
names are safe to write below a directory, and output stays bounded."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Every reader is imported here so that a direct run's atheris.instrument_all() covers them.
from vmshield.engines.file.containers import (  # noqa: F401
    _arj_lzh,
    _nrv,
    archive,
    arj,
    executable,
    ole2,
    pdf,
    rtf,
    streams,
    szdd,
    text,
    tnef,
    upx,
    zipfmt,
)
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget

LIMITS = Limits(
    max_file_size=4 * 1024 * 1024, max_scan_size=16 * 1024 * 1024, max_files=500, max_scan_time=10.0
)


def budget() -> ScanBudget:
    return ScanBudget(LIMITS)


def _safe(n: str) -> bool:
    return not n.startswith("/") and ".." not in n.split("/") and "\x00" not in n and "\\" not in n


def check_members(it: Iterable[Any] | None) -> None:
    """Walk a reader's members (None: the reader declined the input) and check each one."""
    if it is None:
        return
    total = 0
    try:
        for m in it:
            assert _safe(m.name), m.name
            assert m.data is None or isinstance(m.data, bytes)
            total += len(m.data or b"")
            assert len(m.data or b"") <= LIMITS.max_file_size + 256, (m.name, len(m.data or b""))
    except LimitExceeded:
        pass
    assert total <= 64 * LIMITS.max_file_size


def seeds_for(target: str) -> Callable[[], list[bytes]]:
    """Valid samples to start from, built by the tests' own writers (never stored)."""

    def seeds() -> list[bytes]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "file"))
        from container_testlib import fuzz_seeds

        return list(fuzz_seeds(target))

    return seeds
