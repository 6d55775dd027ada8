#!/usr/bin/env python3
"""File-scanning benchmark: vmshield scan (1 and 2 jobs) against Debian's clamscan and clamd.

`make bench-file`. One run:
  1. a corpus of about 1 GB copied from /usr/lib, /usr/share, /usr/bin into a cache directory
     under /var/tmp (reused when present), plus planted samples;
  2. one database for every engine: 10 000 random MD5 signatures, 1 000 body signatures (a fifth
     with wildcards), the same patterns as YARA rules, some made from the planted samples;
  3. the corpus read once so every tool scans cached files;
  4. vmshield scan -j1, vmshield scan -j2, clamscan, clamd + clamdscan --multiscan;
  5. MB/s, files/s, peak RSS, database load time, ratios, and whether detections agree;
  6. load time of 100 000 hash + 10 000 body signatures.
Not a test: it prints figures (record them in BENCHMARKS.md). Other processes share the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VMSHIELD = ROOT / ".venv" / "bin" / "vmshield"
CACHE = Path(os.environ.get("VMSHIELD_BENCH_CACHE", "/var/tmp/vmshield-bench-corpus"))
SOURCES = ("/usr/lib", "/usr/share", "/usr/bin")
MAX_MEMBER = 40 * 1024 * 1024


def build_corpus(target_bytes: int) -> tuple[Path, int, int]:
    corpus = CACHE / "corpus"
    marker = CACHE / f"complete-{target_bytes}"
    if not marker.exists():
        if CACHE.exists():
            shutil.rmtree(CACHE)
        corpus.mkdir(parents=True)
        total = 0
        n = 0
        for src in SOURCES:
            for root, dirs, files in os.walk(src):
                dirs.sort()
                for f in sorted(files):
                    p = os.path.join(root, f)
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    try:
                        size = os.path.getsize(p)
                    except OSError:
                        continue
                    if size == 0 or size > MAX_MEMBER:
                        continue
                    dest = corpus / f"{n // 1000:03d}" / f"{n:06d}_{f[-60:]}"
                    dest.parent.mkdir(exist_ok=True)
                    try:
                        shutil.copyfile(p, dest)
                    except OSError:
                        continue
                    total += size
                    n += 1
                    if total >= target_bytes:
                        break
                if total >= target_bytes:
                    break
            if total >= target_bytes:
                break
        marker.write_text(f"{n} {total}\n")
    n, total = map(int, marker.read_text().split())
    return corpus, n, total


def yara_hex(tokens: list[str]) -> str:
    return " ".join(tokens)


def build_db(dbdir: Path, corpus: Path, rng: random.Random) -> dict[str, set[str]]:
    """Database plus planted samples; returns planted file → expected signature names."""
    planted = corpus / "planted"
    if planted.exists():
        shutil.rmtree(planted)
    planted.mkdir()
    expected: dict[str, set[str]] = {}
    hdb = []
    for i in range(10_000):
        hdb.append(f"{rng.randbytes(16).hex()}:{rng.randint(100, 10**7)}:Bench.Hash.{i}")
    ndb = []
    yar = []
    for i in range(1000):
        a, b = rng.randbytes(rng.randint(6, 10)), rng.randbytes(rng.randint(4, 8))
        if i % 5 == 0:  # a fifth with wildcards
            kind = i % 3
            if kind == 0:
                hx, yx, filler = a.hex() + "??" + b.hex(), f"{a.hex()} ?? {b.hex()}", b"Z"
            elif kind == 1:
                hx, yx, filler = a.hex() + "{2-8}" + b.hex(), f"{a.hex()} [2-8] {b.hex()}", b"ZZZZ"
            else:
                hx, yx, filler = a.hex() + "*" + b.hex(), f"{a.hex()} [-] {b.hex()}", b"Z" * 40
        else:
            hx, yx, filler = (a + b).hex(), (a + b).hex(), b""
        ndb.append(f"Bench.Body.{i}:0:*:{hx}")
        yx_spaced = " ".join(
            yx[j : j + 2] if yx[j] not in "[?" else yx[j:] for j in range(0, len(yx), 2)
        )
        yar.append(
            f"rule Bench_Yara_{i} {{ strings: $a = {{ {_yara_spaced(yx)} }} condition: $a }}"
        )
        del yx_spaced
        if i % 100 == 0:  # plant ten samples carrying a body pattern
            data = rng.randbytes(5000) + a + filler + b + rng.randbytes(5000)
            name = f"body_{i}.bin"
            (planted / name).write_bytes(data)
            expected[name] = {f"Bench.Body.{i}", f"Bench_Yara_{i}"}
    for j in range(10):  # and ten whose MD5 is in the database
        data = rng.randbytes(rng.randint(1000, 100_000))
        name = f"hash_{j}.bin"
        (planted / name).write_bytes(data)
        hdb.append(f"{hashlib.md5(data).hexdigest()}:{len(data)}:Bench.Planted.{j}")
        expected[name] = {f"Bench.Planted.{j}"}
    if dbdir.exists():
        shutil.rmtree(dbdir)
    dbdir.mkdir(parents=True)
    (dbdir / "bench.hdb").write_text("\n".join(hdb) + "\n")
    (dbdir / "bench.ndb").write_text("\n".join(ndb) + "\n")
    (dbdir / "bench.yar").write_text("\n".join(yar) + "\n")
    return expected


def _yara_spaced(yx: str) -> str:
    out = []
    for tok in yx.split(" "):
        if tok.startswith("[") or tok == "??":
            out.append(tok)
        else:
            out.extend(tok[j : j + 2] for j in range(0, len(tok), 2))
    return " ".join(out)


def warm(corpus: Path) -> None:
    for root, _dirs, files in os.walk(corpus):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                while fh.read(1 << 20):
                    pass


def run(cmd: list[str]) -> tuple[float, int, str, int, float]:
    """Wall time, peak RSS (KiB, largest process of the tree), stdout, exit code, CPU seconds
    (user + system of the process and its children: unlike wall time, not inflated by the other
    work sharing this machine's cores)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, etext = out.read(), err.read()
    if proc.returncode not in (0, 1):
        print(f"  ! {cmd[0]} exited {proc.returncode}: {etext.strip()[:500]}", file=sys.stderr)
    return wall, ru.ru_maxrss, text, proc.returncode, ru.ru_utime + ru.ru_stime


def parse_found(out: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for line in out.splitlines():
        m = re.match(r"^(.*?): (\S+) FOUND$", line)
        if m:
            top = m.group(1).split("//", 1)[0]
            found.setdefault(os.path.basename(top), set()).add(
                m.group(2).removesuffix(".UNOFFICIAL")
            )
    return found


def start_clamd(dbdir: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], Path, float]:
    sock = tmp / "clamd.sock"
    conf = tmp / "clamd.conf"
    conf.write_text(
        f"LocalSocket {sock}\nDatabaseDirectory {dbdir}\nForeground yes\nLogFile {tmp}/clamd.log\n"
        f"PidFile {tmp}/clamd.pid\nTemporaryDirectory {tmp}\nBytecode no\nMaxThreads 2\n"
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["clamd", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while time.monotonic() - t0 < 300:
        if sock.exists():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                    s.sendall(b"zPING\0")
                    if s.recv(16).startswith(b"PONG"):
                        break
            except OSError:
                pass
        if proc.poll() is not None:
            raise RuntimeError(f"clamd exited: {(tmp / 'clamd.log').read_text()[-800:]}")
        time.sleep(0.05)
    return proc, conf, time.monotonic() - t0


def load_time_big(tmp: Path, rng: random.Random) -> tuple[float, float, float, float]:
    d = tmp / "bigdb"
    d.mkdir()
    with open(d / "big.hdb", "w") as f:
        for i in range(100_000):
            f.write(f"{rng.randbytes(16).hex()}:{rng.randint(1, 10**7)}:Big.Hash.{i}\n")
    with open(d / "big.ndb", "w") as f:
        for i in range(10_000):
            sig = rng.randbytes(8).hex() + ("{2-6}" + rng.randbytes(4).hex() if i % 5 == 0 else "")
            f.write(f"Big.Body.{i}:0:*:{sig}\n")
    sys.path.insert(0, str(ROOT / "src"))
    from vmshield.engines.file.database import Database

    t0, c0 = time.monotonic(), time.process_time()
    db = Database.load(d)
    t1, c1 = time.monotonic(), time.process_time()
    _ = db.matcher  # Hyperscan compile
    t2, c2 = time.monotonic(), time.process_time()
    assert not db.rejected and db.signature_count == 110_000
    return t1 - t0, t2 - t0, c1 - c0, c2 - c0


def run_config(
    label: str,
    dbdir: Path,
    corpus: Path,
    tmp: Path,
    expected: dict[str, set[str]],
    nfiles: int,
    mb: float,
    skip_clamav: bool,
) -> None:
    print(f"\n== {label} ==", flush=True)
    results: dict[str, dict[str, object]] = {}

    def record(name: str, wall: float, rss: int, out: str, load: float | None, cpu: float) -> None:
        found = parse_found(out)
        results[name] = {"wall": wall, "rss": rss, "found": found, "load": load, "cpu": cpu}
        print(
            f"{name:<18} wall {wall:6.1f} s {mb / wall:6.1f} MB/s {nfiles / wall:6.0f} files/s | "
            f"CPU {cpu:6.1f} s {mb / cpu:6.1f} MB/CPU-s | peak RSS {rss / 1024:4.0f} MiB | "
            f"infected files {len(found)}"
            + (f" | db load {load:.2f} s" if load is not None else ""),
            flush=True,
        )

    for jobs in (1, 2):
        wall, rss, out, _, cpu = run(
            [str(VMSHIELD), "scan", "-r", "--db", str(dbdir), f"--jobs={jobs}", str(corpus)]
        )
        m = re.search(r"Database load time: ([0-9.]+)", out)
        record(f"vmshield -j{jobs}", wall, rss, out, float(m.group(1)) if m else None, cpu)
    if not skip_clamav:
        empty = tmp / "empty.txt"
        empty.write_text("x" * 100)
        lt, _, _, _, _ = run(
            ["clamscan", "--no-summary", "--bytecode=no", "-d", str(dbdir), str(empty)]
        )
        wall, rss, out, _, cpu = run(
            ["clamscan", "-r", "--no-summary", "--bytecode=no", "-d", str(dbdir), str(corpus)]
        )
        record("clamscan", wall, rss, out, lt, cpu)
        proc, conf, ready = start_clamd(dbdir, tmp)
        try:
            import psutil

            daemon = psutil.Process(proc.pid)
            c0 = daemon.cpu_times()
            wall, _rss, out, _, ccpu = run(
                ["clamdscan", "-c", str(conf), "--multiscan", "--no-summary", str(corpus)]
            )
            c1 = daemon.cpu_times()
            cpu = ccpu + (c1.user - c0.user) + (c1.system - c0.system)
            rss = daemon.memory_info().rss // 1024
            record("clamd --multiscan", wall, rss, out, ready, cpu)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ours = results["vmshield -j1"]["found"]
    assert isinstance(ours, dict)
    got = sum(1 for k in expected if expected[k] <= ours.get(k, set()))
    print(f"planted samples found by vmshield -j1 with every expected name: {got}/{len(expected)}")
    for name, r in results.items():
        f = r["found"]
        assert isinstance(f, dict)
        same = set(f) == set(ours)
        # clamscan/clamd stop at the first name per file: each must be one of ours.
        names_ok = all(n <= ours.get(k, set()) for k, n in f.items())
        print(
            f"  {name:<22} same infected files as vmshield -j1: {same}; names among ours: {names_ok}"
        )
        if not same:
            print(f"    only vmshield: {sorted(set(ours) - set(f))[:10]}")
            print(f"    only {name}: {sorted(set(f) - set(ours))[:10]}")
    if "clamscan" in results:
        w = {k: float(r["wall"]) for k, r in results.items()}  # type: ignore[arg-type]
        print(
            f"ratio vmshield -j1 / clamscan throughput:        {w['clamscan'] / w['vmshield -j1']:.2f}x"
        )
        print(
            f"ratio vmshield -j2 / clamd multiscan throughput: {w['clamd --multiscan'] / w['vmshield -j2']:.2f}x"
        )
        c = {k: float(r["cpu"]) for k, r in results.items()}  # type: ignore[arg-type]
        print(
            "ratio of CPU efficiency (MB per CPU-second), vmshield -j1 / clamscan: "
            f"{c['clamscan'] / c['vmshield -j1']:.2f}x"
        )
        print(
            "ratio of CPU efficiency, vmshield -j2 / clamd multiscan:             "
            f"{c['clamd --multiscan'] / c['vmshield -j2']:.2f}x"
        )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--skip-clamav", action="store_true")
    ap.add_argument("--only", choices=("yara", "noyara", "load"), action="append", default=[])
    args = ap.parse_args()
    todo = set(args.only or ("yara", "noyara", "load"))
    rng = random.Random(20261127)
    print(f"corpus: building/reusing {args.size_mb} MB in {CACHE} …", flush=True)
    corpus, nfiles, nbytes = build_corpus(args.size_mb * 1024 * 1024)
    tmp = Path(tempfile.mkdtemp(prefix="vmshield-bench-"))
    try:
        dbdir = tmp / "db"
        expected = build_db(dbdir, corpus, rng)
        nfiles += len(expected)
        nbytes += sum((corpus / "planted" / n).stat().st_size for n in expected)
        mb = nbytes / 1e6
        print(f"corpus: {nfiles} files, {mb:.0f} MB (cached: read once before the runs)")
        print(f"load average at start: {os.getloadavg()[0]:.1f} (the machine's 2 cores are shared)")
        warm(corpus)
        if "yara" in todo:
            run_config(
                "10 010 MD5 + 1 000 body + the same 1 000 patterns as YARA rules",
                dbdir,
                corpus,
                tmp,
                expected,
                nfiles,
                mb,
                args.skip_clamav,
            )
        if "noyara" in todo:
            nodb = tmp / "db-noyara"
            nodb.mkdir()
            for f in ("bench.hdb", "bench.ndb"):
                shutil.copyfile(dbdir / f, nodb / f)
            exp2 = {
                k: {n for n in v if not n.startswith("Bench_Yara")} for k, v in expected.items()
            }
            run_config(
                "10 010 MD5 + 1 000 body signatures (no YARA)",
                nodb,
                corpus,
                tmp,
                exp2,
                nfiles,
                mb,
                args.skip_clamav,
            )
        if "load" in todo:
            lo, lc, co, cc = load_time_big(tmp, rng)
            print(
                f"\nload 100 000 MD5 + 10 000 body signatures: parse {lo:.2f} s wall "
                f"({co:.2f} s CPU), parse + Hyperscan compile {lc:.2f} s wall ({cc:.2f} s CPU)"
            )
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
