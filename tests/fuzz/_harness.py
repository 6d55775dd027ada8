"""What every fuzz target shares: the entry point for running one target by hand.

`make fuzz` (tests/fuzz/run_all.py) imports each target under atheris instrumentation and calls
its `TestOneInput`; `main` here is only for a direct run from the repository root:

    .venv/bin/python -m tests.fuzz.fuzz_container_zip -max_total_time=60 [CORPUS_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# Coverage guidance needs the interpreted engine: atheris instruments Python code, not the mypyc
# build (VMSHIELD_NATIVE=1 fuzzes the compiled modules instead, blind but for crashes). Set here,
# before any target imports vmshield: every target imports this module first.
os.environ.setdefault("VMSHIELD_NATIVE", "0")


def main(
    test_one_input: Callable[[bytes], None],
    seeds: Callable[[], list[bytes]] | None = None,
) -> None:
    import atheris

    # Without a corpus argument, start from the target's valid samples (kept between runs).
    if seeds is not None and not any(not a.startswith("-") for a in sys.argv[1:]):
        corpus = Path(tempfile.gettempdir()) / "vmshield-fuzz-corpus" / Path(sys.argv[0]).stem
        corpus.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds()):
            (corpus / f"seed-{i}").write_bytes(s)
        sys.argv.append(str(corpus))
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
