"""The compiled engine (mypyc) and the interpreted sources give the same results.

mypyc changes semantics in corner cases (native classes, integer types, keyword forwarding); the
engine runs compiled in production and interpreted under the fuzzers, so both must agree on
every field, verdict and event, malformed frames included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmshield import native

_RUN = Path(__file__).with_name("_equivalence_run.py")


def _run(env_native: str) -> list[str]:
    env = {**os.environ, "VMSHIELD_NATIVE": env_native}
    out = subprocess.run(
        [sys.executable, str(_RUN), "6000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    ).stdout
    return out.splitlines()


def test_compiled_and_interpreted_engines_agree() -> None:
    ok, why = native.status()
    if not ok:
        pytest.skip(f"no compiled engine to compare: {why}")
    compiled, interpreted = _run("1"), _run("0")
    assert compiled[0] == "compiled (mypyc)"
    assert interpreted[0].startswith("interpreted")
    assert len(compiled) == len(interpreted) > 6000
    for a, b in zip(compiled[1:], interpreted[1:], strict=True):
        assert a == b
    # The run exercised what it claims: alerts, anomalies and blocks among the results.
    text = "\n".join(compiled)
    assert "'alert'" in text and "'anomaly'" in text and "decoder." in text
