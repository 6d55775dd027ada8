"""Fuzz disinfection: any zip/tar-looking bytes and member list give a result, never an exception;
a successful rebuild is itself a readable archive without the removed members."""

from __future__ import annotations

from tests.fuzz._containers import seeds_for
from tests.fuzz._harness import main
from vmshield.engines.file.containers import open_container
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
    assert r.data is not None  # r.ok
    whole = [x for x in r.removed if not x.endswith("//...")]
    if whole:
        # Duplicate names are renamed by position ("a", "a~1"), so count members, not names.
        try:
            before = len(
                list(open_container(blob, "orig", ScanBudget(Limits(max_scan_time=10))) or [])
            )
            after = len(
                list(open_container(r.data, "rebuilt", ScanBudget(Limits(max_scan_time=10))) or [])
            )
        except LimitExceeded:
            return
        assert after <= before - len(whole), (r.removed, before, after)


if __name__ == "__main__":
    main(TestOneInput, seeds_for("disinfect"))
