"""Fuzz our zip walker (central directory, overlap, bounded inflate): any bytes give members or LimitExceeded; names are safe, output is bounded."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from vmshield.engines.file.containers import (  # noqa: F401 - loaded before instrumentation
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
MAGIC = b"PK\x03\x04"


def _safe(n: str) -> bool:
    return not n.startswith("/") and ".." not in n.split("/") and "\x00" not in n and "\\" not in n


def TestOneInput(data: bytes) -> None:
    blob = MAGIC + data
    budget = ScanBudget(LIMITS)
    it = zipfmt.walk(blob, budget)
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


def seeds() -> list[bytes]:
    """Valid samples to start from, built by the tests' own writers (never stored)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "file"))
    from container_testlib import fuzz_seeds

    return fuzz_seeds("zip")


def main() -> None:
    import atheris

    # Without a corpus argument, start from valid samples built here (kept between runs).
    if not any(not a.startswith("-") for a in sys.argv[1:]):
        corpus = Path(tempfile.gettempdir()) / "vmshield-fuzz-corpus" / Path(__file__).stem
        corpus.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds()):
            (corpus / f"seed-{i}").write_bytes(s)
        sys.argv.append(str(corpus))
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
