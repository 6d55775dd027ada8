"""Compile the network engine's hot modules with mypyc into build/native/ (see
src/vmshield/native.py). Quick when the build is up to date; `--force` rebuilds.

    .venv/bin/python scripts/build_native.py [--force]

Needs gcc and the Python headers (Debian: build-essential, python3-dev; present on the machines
this project runs on) and the dev dependencies (mypy, setuptools). Without a build the engine
runs interpreted: this is speed, not function, so a failed build is reported and not fatal
unless --strict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))
os.environ["VMSHIELD_NATIVE"] = "0"  # importing native.py must not pick up the old build

from vmshield import native  # noqa: E402

_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify
modules, lib, temp, c_dir, config = sys.argv[1].split(","), *sys.argv[2:6]
sys.argv[1:] = ["build_ext", "--build-lib", lib, "--build-temp", temp]
setup(name="vmshield-native", ext_modules=mypycify(["--config-file", config, *modules],
      opt_level="3", debug_level="0", target_dir=c_dir))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the build fails")
    ap.add_argument(
        "--keep-c", metavar="DIR", help="keep the generated C in DIR (to read what a line costs)"
    )
    args = ap.parse_args()
    out = native.build_dir()
    hashes = native.source_hashes()
    stamp = out / native.STAMP
    if not args.force and stamp.exists():
        try:
            old = json.loads(stamp.read_text())
        except ValueError:
            old = {}
        if old.get("sources") == hashes and old.get("tag") == native.build_tag():
            print(f"build_native: up to date ({out})")
            return 0
    t0 = time.monotonic()
    print(f"build_native: compiling {len(native.MODULES)} modules with mypyc (1-3 minutes)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="native-tmp-", dir=out.parent) as tmp:
        new = Path(tmp) / "lib"
        # Compiled from a snapshot of the sources, so an edit made during the build cannot end
        # up in a build stamped with the old hashes.
        snap = Path(tmp) / "src"
        shutil.copytree(
            SRC / "vmshield", snap / "vmshield", ignore=shutil.ignore_patterns("__pycache__")
        )
        if native.source_hashes(snap) != hashes:
            print("build_native: sources changed while copying; run it again", file=sys.stderr)
            return 1
        r = subprocess.run(
            [sys.executable, "-c", _SETUP, ",".join(native.MODULES), str(new),
             str(Path(tmp) / "temp"), str(Path(tmp) / "c"), str(ROOT / "pyproject.toml")],
            cwd=snap, capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
            print("build_native: FAILED; the engine runs interpreted", file=sys.stderr)
            return 1 if args.strict else 0
        if args.keep_c:
            shutil.rmtree(args.keep_c, ignore_errors=True)
            shutil.copytree(Path(tmp) / "c", args.keep_c)
        (new / native.STAMP).write_text(
            json.dumps({"tag": native.build_tag(), "sources": hashes}, indent=1)
        )
        # Swapped in whole by renames (same file system): a half-copied build is never seen.
        old_dir = Path(tmp) / "old"
        if out.exists():
            out.rename(old_dir)
        new.rename(out)
    print(f"build_native: built in {time.monotonic() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
