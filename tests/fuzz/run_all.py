"""Run every tests/fuzz/fuzz_*.py under atheris for a bounded time, each in its own process.

    python -m tests.fuzz.run_all --seconds 60 [--only NAME]

Each target exposes `TestOneInput(data: bytes)` and runs through its own entry point, seeded
with valid samples where it has them (tests/fuzz/_harness.py). A target that crashes leaves its
input in var/fuzz/<target>/ and the run ends with exit code 1; the summary says OK or CRASH per
target, with the number of executions and the time it ran. `make fuzz` calls this (outside CI).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def run_one(target: Path, seconds: int) -> tuple[str, str]:
    artifacts = ROOT / "var" / "fuzz" / target.stem
    artifacts.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        # Run as `python -m tests.fuzz.fuzz_X`, as by hand: the target's own entry point starts
        # libFuzzer from its seed samples (valid inputs of the format), not from nothing.
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                f"tests.fuzz.{target.stem}",
                f"-max_total_time={seconds}",
                "-timeout=30",
                "-rss_limit_mb=3072",
                f"-artifact_prefix={artifacts}/",
                "-print_final_stats=1",
            ],
            capture_output=True,
            text=True,
            timeout=seconds * 3 + 120,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return "HANG", f"did not finish within {seconds * 3 + 120} s"
    took = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    runs = execs[-1] if execs else "?"
    if proc.returncode == 0:
        return "OK", f"{runs} executions in {took:.0f} s, no crash"
    crash = re.findall(r"Test unit written to (\S+)", log)
    where = crash[-1] if crash else "none"
    if "/timeout-" in where or "ALARM: working on the last Unit" in log:
        return "HANG", f"after {took:.0f} s: one input ran over 30 s (input: {where})"
    if "/oom-" in where or "out-of-memory" in log:
        return "OOM", f"after {took:.0f} s: over 3 GB of memory (input: {where})"
    exc = re.findall(r"^(\w+(?:Error|Exception)[^\n]*)", log, re.M)
    detail = exc[-1] if exc else log.strip().splitlines()[-1] if log.strip() else "no output"
    return "CRASH", f"after {took:.0f} s: {detail[:300]} (input: {where})"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=int, default=60, help="time per target")
    ap.add_argument(
        "--only", action="append", default=[], help="run targets whose name contains this"
    )
    args = ap.parse_args()
    targets = sorted(HERE.glob("fuzz_*.py"))
    if args.only:
        targets = [t for t in targets if any(o in t.stem for o in args.only)]
    if not targets:
        print("no fuzz targets found", file=sys.stderr)
        return 2
    failed = 0
    for t in targets:
        status, detail = run_one(t, args.seconds)
        failed += status != "OK"
        print(f"{t.stem:<34} {status:<6} {detail}", flush=True)
    print(f"{len(targets) - failed}/{len(targets)} targets ran {args.seconds} s without a crash")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
