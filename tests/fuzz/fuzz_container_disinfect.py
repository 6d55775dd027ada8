"""Fuzz disinfection: any zip/tar-looking bytes and member list give a result, never an exception;
a successful rebuild is itself a readable archive without the removed members."""

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
    open_container,
    pdf,
    rtf,
    streams,
    szdd,
    text,
    tnef,
    upx,
    zipfmt,
)
from vmshield.engines.file.disinfect import disinfect
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget


def TestOneInput(data: bytes) -> None:
    if len(data) < 2:
        return
    blob = (b"PK\x03\x04" if data[0] & 1 else b"") + data[2:]
    victims = ["a", "word/vbaProject.bin", "x//y"][: data[1] % 4]
    r = disinfect(blob, victims)
    assert r.ok == (r.data is not None)
    if not r.ok:
        assert r.reason.startswith("cannot be disinfected"), r.reason
        return
    whole = [x for x in r.removed if not x.endswith("//...")]
    if whole:
        # Duplicate names are renamed by position ("a", "a~1"), so count members, not names.
        try:
            before = len(
                list(open_container(blob, "orig", ScanBudget(Limits(max_scan_time=10))) or [])
            )
            after = len(
                list(open_container(r.data, "rebuilt", ScanBudget(Limits(max_scan_time=10))) or [])
            )  # type: ignore[arg-type]
        except LimitExceeded:
            return
        assert after <= before - len(whole), (r.removed, before, after)


def seeds() -> list[bytes]:
    """Valid samples to start from, built by the tests' own writers (never stored)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "file"))
    from container_testlib import fuzz_seeds

    return fuzz_seeds("disinfect")


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
