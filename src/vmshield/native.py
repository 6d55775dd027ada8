"""Process-level speed settings: the network engine's hot modules compiled to C with mypyc
(used when present and up to date), and the garbage collector of packet loops.

Kept outside `vmshield.engines`: reading the build and hashing the sources is I/O at import,
which the sans-IO engines do not do themselves; their packages only call `extend`.

The per-packet pipeline (decode, flows, streams, app-layer parsers, rule matching, attack
detection) is plain typed Python; `scripts/build_native.py` (run by `scripts/bootstrap`) compiles
the same sources with mypyc into `build/native/`. This module puts that directory first on the
engine packages' import path, so the compiled modules load instead of the sources, but only when
the build's recorded source hashes still match the sources: an edited module is never shadowed
by a stale build (the whole build is then skipped until it is rebuilt; `ACTIVE` and `REASON`
say which code runs, and `vmshield nids` prints it).

`VMSHIELD_NATIVE=0` turns the compiled modules off (fuzzing with coverage, debugging);
`VMSHIELD_NATIVE_DIR` points at another build. Nothing here is needed for correctness: without a
build the engine runs the same code interpreted, only slower.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# Modules compiled, relative to src/ (one mypyc group: calls between them are direct C calls).
MODULES = (
    "vmshield/event_stamps.py",
    "vmshield/engines/net/packet.py",
    "vmshield/engines/net/decode.py",
    "vmshield/engines/net/flow.py",
    "vmshield/engines/net/stream.py",
    "vmshield/engines/net/defrag.py",
    "vmshield/engines/net/engine.py",
    "vmshield/engines/net/attacks.py",
    "vmshield/engines/net/pcap.py",
    "vmshield/engines/net/eve.py",
    "vmshield/engines/net/app/http.py",
    "vmshield/engines/net/app/dns.py",
    "vmshield/engines/net/app/tls.py",
    "vmshield/engines/net/app/detect.py",
    "vmshield/engines/net/app/ssh.py",
    "vmshield/engines/net/rules/ruleset.py",
    "vmshield/engines/net/rules/detect.py",
    "vmshield/engines/net/rules/checks.py",
    "vmshield/engines/net/rules/model.py",
)
STAMP = "native-stamp.json"

SRC_ROOT = Path(__file__).resolve().parents[1]  # .../src


def build_dir() -> Path:
    return Path(os.environ.get("VMSHIELD_NATIVE_DIR") or SRC_ROOT.parent / "build" / "native")


def source_hashes(src_root: Path = SRC_ROOT) -> dict[str, str]:
    return {m: hashlib.sha256((src_root / m).read_bytes()).hexdigest() for m in MODULES}


def build_tag() -> str:
    """What the compiled files depend on besides the sources."""
    return f"{sys.implementation.cache_tag}-{sys.platform}"


def status() -> tuple[bool, str]:
    """Whether the compiled modules can be used, and why not."""
    if os.environ.get("VMSHIELD_NATIVE", "1") == "0":
        return False, "turned off (VMSHIELD_NATIVE=0)"
    d = build_dir()
    try:
        stamp = json.loads((d / STAMP).read_text())
    except (OSError, ValueError):
        return False, f"no build in {d} (scripts/build_native.py makes it)"
    if stamp.get("tag") != build_tag():
        return False, f"build in {d} is for {stamp.get('tag')}, not {build_tag()}"
    try:
        current = source_hashes()
    except OSError as e:  # an installed copy without its sources: nothing to compare
        return False, f"sources unreadable: {e}"
    stale = sorted(m for m, h in current.items() if stamp.get("sources", {}).get(m) != h)
    if stale:
        return False, f"build in {d} is older than {', '.join(stale)} (run scripts/build_native.py)"
    return True, str(d)


ACTIVE, REASON = status()
if ACTIVE:
    _root = build_dir()
    if str(_root) not in sys.path:
        # The mypyc runtime shared by the compiled modules is a top-level module of the build.
        sys.path.insert(0, str(_root))


def describe() -> str:
    return "compiled (mypyc)" if ACTIVE else f"interpreted: {REASON}"


def extend(package_path: list[str], package: str) -> None:
    """Put the compiled modules of `package` (dotted name) first on its `__path__`."""
    if ACTIVE:
        d = build_dir().joinpath(*package.split("."))
        if d.is_dir() and str(d) not in package_path:
            package_path.insert(0, str(d))


def tune_gc() -> None:
    """Garbage-collector settings for a process that runs the packet path, called once the
    rules and databases are loaded. The pipeline allocates a few short-lived containers per
    packet, so CPython's default (a young collection every 700 allocations, a full pass over
    every flow's objects every 100 of those) spends a fifth of the time collecting; what was
    loaded up to here (rules, prefilters, URL index) is frozen out of the collector's passes.
    Reference counting still frees almost everything at once; this only spaces out the search
    for cycles. Measured in BENCHMARKS.md (network engine)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


# A batch run's young-generation threshold (objects): the collector looks for cycles once the
# objects it tracks have grown by this many since its last pass, not every few thousand.
BATCH_YOUNG_OBJECTS = 1_000_000


@contextlib.contextmanager
def batch_gc() -> Iterator[None]:
    """Garbage-collector setting for a batch run over a capture (`vmshield nids`). The packet
    path makes no reference cycles (a full collection after a million packets of the benchmark
    capture finds none: reference counting frees everything), yet with the usual thresholds
    the collector's passes over the flows' long-lived objects took ~8 % of the engine's time,
    and a full pass every million packets still 5 %: ~0.55 s for the 850 000 objects that a
    million packets leave alive. So a pass comes only after BATCH_YOUNG_OBJECTS of net growth
    (objects made minus objects freed), and older generations as CPython spaces them (a full
    pass when a quarter more objects survived than the last one saw): the time spent is
    proportional to growth, and a cycle made on some rare path is still reclaimed. A steady
    flow table (as many flows ending as starting) is never walked. Not for the inline
    workers: a pass over a young generation of a million objects would stall the queue (they
    keep `tune_gc`). Call `tune_gc` first, once the load is done; the previous thresholds are
    restored when the block ends."""
    before = gc.get_threshold()
    gc.set_threshold(BATCH_YOUNG_OBJECTS, 10, 10)
    try:
        yield
    finally:
        gc.set_threshold(*before)
