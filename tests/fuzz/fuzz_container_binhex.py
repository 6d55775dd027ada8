"""Fuzz our BinHex 4.0 decoder: any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

import sys

from vmshield.engines.file.containers import text
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget

LIMITS = Limits(
    max_file_size=4 * 1024 * 1024, max_scan_size=16 * 1024 * 1024, max_files=500, max_scan_time=10.0
)
MAGIC = b"b'(This file must be converted with BinHex 4.0)\\n:'"


def _safe(n: str) -> bool:
    return not n.startswith("/") and ".." not in n.split("/") and "\x00" not in n and "\\" not in n


def TestOneInput(data: bytes) -> None:
    blob = MAGIC + data
    budget = ScanBudget(LIMITS)
    it = text.walk(blob, "a.hqx", budget)
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


def main() -> None:
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
