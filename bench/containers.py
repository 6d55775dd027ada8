"""Container walking, bomb refusal, disinfection and quarantine figures (prints; not a test).

Usage: .venv/bin/python bench/containers.py [--mb 100]
The corpus is copied from this machine's own files (/usr/lib, /usr/share), then packed by the
system's tools; every figure is the uncompressed bytes walked per second of wall time.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "file"))

from vmshield.engines.file.containers import open_container  # noqa: E402
from vmshield.engines.file.disinfect import disinfect  # noqa: E402
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget  # noqa: E402
from vmshield.engines.file.quarantine import QuarantineStore  # noqa: E402

MiB = 1024 * 1024


def corpus(root: Path, limit: int) -> list[Path]:
    files: list[Path] = []
    total = 0
    for base in ("/usr/lib/x86_64-linux-gnu", "/usr/share/doc", "/usr/lib/python3"):
        for dirpath, _d, names in os.walk(base):
            for n in names:
                p = Path(dirpath) / n
                try:
                    if p.is_symlink() or not p.is_file() or p.stat().st_size > 8 * MiB:
                        continue
                    dst = root / "c" / f"{len(files):05d}_{n}"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(p, dst)
                except OSError:
                    continue
                files.append(dst)
                total += dst.stat().st_size
                if total >= limit:
                    return files
    return files


def walk(blob: bytes, name: str) -> tuple[int, float, int]:
    t = time.perf_counter()
    n = size = 0
    for m in open_container(blob, name, ScanBudget(Limits(max_files=1_000_000))) or []:
        n += 1
        size += len(m.data or b"")
    return size, time.perf_counter() - t, n


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bomb(blob: bytes, name: str) -> tuple[str, float]:
    """The limit that refused the bomb (or "not refused!") and the time to refuse it."""
    t = time.perf_counter()
    try:
        walk(blob, name)
        res = "not refused!"
    except LimitExceeded as exc:
        res = exc.limit
    return res, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vmshield-bench-containers-"))
    try:
        files = corpus(tmp, args.mb * MiB)
        raw = sum(f.stat().st_size for f in files)
        print(
            f"corpus: {len(files)} files, {raw / MiB:.1f} MiB (load average {os.getloadavg()[0]:.1f})"
        )
        names = [str(f.relative_to(tmp / "c")) for f in files]
        subprocess.run(["zip", "-q", "-r", str(tmp / "a.zip"), "."], cwd=tmp / "c", check=True)
        subprocess.run(["tar", "czf", str(tmp / "a.tgz"), "."], cwd=tmp / "c", check=True)
        subprocess.run(
            ["7zz", "a", "-bd", "-mx=1", str(tmp / "a.7z"), "."],
            cwd=tmp / "c",
            check=True,
            capture_output=True,
        )
        for label, path in (
            ("zip (deflate)", "a.zip"),
            ("tar.gz", "a.tgz"),
            ("7z (LZMA2 -mx1)", "a.7z"),
        ):
            blob = (tmp / path).read_bytes()
            size, secs, n = walk(blob, path)
            print(
                f"walk {label:16s} {n:6d} members {size / MiB:7.1f} MiB in {secs:6.2f} s = {size / MiB / secs:6.1f} MiB/s"
            )
        blob = (tmp / "a.zip").read_bytes()
        secs = timed(
            lambda: [
                zipfile.ZipFile(io.BytesIO(blob)).read(i)
                for i in zipfile.ZipFile(io.BytesIO(blob)).infolist()
            ]
        )
        print(
            f"reference: Python zipfile reads the same zip in {secs:.2f} s = {raw / MiB / secs:.1f} MiB/s"
        )
        victim = names[len(names) // 2]
        t = time.perf_counter()
        r = disinfect(blob, [victim])
        print(
            f"disinfect: zip of {len(blob) / MiB:.1f} MiB rebuilt without 1 member in {time.perf_counter() - t:.2f} s (ok={r.ok})"
        )
        # Bombs
        zeros = io.BytesIO()
        with zipfile.ZipFile(zeros, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("z", b"\x00" * 200 * MiB)
        zbomb = zeros.getvalue()
        res, secs = bomb(zbomb, "bomb.zip")
        print(f"bomb: 200 MiB of zeros in a 200 KiB zip: {res} in {secs * 1000:.1f} ms")
        import gzip

        gz = gzip.compress(b"\x00" * 200 * MiB, 9)
        res, secs = bomb(gz, "bomb.gz")
        print(
            f"bomb: 200 MiB of zeros in a {len(gz) // 1024} KiB gzip (no declared size): {res} in {secs * 1000:.1f} ms"
        )
        # Quarantine
        store = QuarantineStore(tmp / "q", max_bytes=4 * 1024 * MiB)
        big = os.urandom(50 * MiB)
        secs = timed(lambda: store.add(big, original_path="/x"))
        print(
            f"quarantine: add 50 MiB (AES-256-GCM, fsync) in {secs:.2f} s = {50 / secs:.0f} MiB/s"
        )
        t = time.perf_counter()
        for i in range(200):
            store.add(b"x" * 4096, original_path=f"/f{i}")
        print(
            f"quarantine: 200 adds of 4 KiB in {time.perf_counter() - t:.2f} s (each publishes 2 files and enforces caps)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
