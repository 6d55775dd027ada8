"""`vmshield scan`: on-demand scanning that answers like clamscan.

Output: `PATH: NAME FOUND`, `PATH: OK`, `PATH: Limits exceeded (LIMIT)`, `PATH: Encrypted`,
`PATH: ERROR reason`, then clamscan's summary block. Exit 0 nothing found, 1 found, 2 errors
(errors win, as with clamscan). Files that hit a limit or are encrypted are listed and counted
in the summary but do not change the exit code.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from vmshield import __version__
from vmshield.engines.file.database import Database
from vmshield.engines.file.limits import Limits
from vmshield.engines.file.results import ScanResult, Status
from vmshield.engines.file.scanner import Scanner

DEFAULT_DB_DIRS = ("/var/lib/vmshield/db",)
_SIZE = re.compile(r"^([0-9]+)([kKmMgG]?)$")
_TIME = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m)?$")


def parse_size(text: str) -> int:
    """clamscan's size syntax: 1024, 500K, 100M, 2G."""
    m = _SIZE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 1048576, 500K, 100M, 2G)")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def parse_time(text: str) -> float:
    """Seconds. A bare number is milliseconds, as clamscan's --max-scantime; or 30s, 2m, 500ms."""
    m = _TIME.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad time {text!r} (use e.g. 120000 (ms), 120s, 2m)")
    v = float(m.group(1))
    return {None: 0.001, "ms": 0.001, "s": 1.0, "m": 60.0}[m.group(2)] * v


def parse_count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"bad count {text!r} (a positive integer)")
    return int(text)


def parse_depth(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"bad depth {text!r} (0 or more)")
    return int(text)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="scan files and directories (answers like clamscan)",
        description="Scan files and directories with ClamAV databases and YARA rules.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--db",
        "-d",
        action="append",
        default=[],
        metavar="PATH",
        help="database file or directory (repeatable); default /var/lib/vmshield/db",
    )
    p.add_argument("-r", "--recursive", action="store_true", help="scan directories recursively")
    p.add_argument("--json", action="store_true", help="one JSON object per file, no summary")
    p.add_argument(
        "--jobs",
        "-j",
        type=parse_count,
        default=1,
        metavar="N",
        help="scan with N worker processes",
    )
    p.add_argument(
        "--action",
        choices=("report", "disinfect", "quarantine", "delete"),
        default="report",
        help="what to do with infected files (default: report)",
    )
    p.add_argument(
        "--fallback",
        choices=("report", "quarantine", "delete"),
        default="report",
        help="with --action disinfect: what to do with a file that cannot be disinfected",
    )
    p.add_argument(
        "--quarantine-dir",
        metavar="DIR",
        default="/var/lib/vmshield/quarantine",
        help="backup/quarantine store (a copy is kept there before any change)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="skip paths matching PATTERN: a shell glob matched against the whole "
        "path and the base name (e.g. '*.iso', '/proc/*'), or 're:REGEX' searched in "
        "the whole path (e.g. 're:/\\.git/'). Matching directories are not entered.",
    )
    p.add_argument("--no-containers", action="store_true", help="do not look inside archives")
    p.add_argument("--max-filesize", type=parse_size, metavar="SIZE", help="default 100M")
    p.add_argument("--max-scansize", type=parse_size, metavar="SIZE", help="default 400M")
    p.add_argument("--max-recursion", type=parse_depth, metavar="N", help="default 17")
    p.add_argument("--max-files", type=parse_count, metavar="N", help="default 10000")
    p.add_argument(
        "--max-scantime",
        type=parse_time,
        metavar="TIME",
        help="per file; milliseconds, or with s/m suffix; default 120000",
    )
    p.add_argument("--infected", "-i", action="store_true", help="print only infected files")
    p.add_argument("--no-summary", action="store_true", help="do not print the summary")
    p.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (auto: when stderr is a terminal)",
    )
    # On-demand scan inside a guest, through its agent (vmshield.svm.ondemand, on-access part).
    p.add_argument(
        "--vm",
        metavar="VM",
        help="scan PATHs inside this guest through its agent (same pipeline and verdict cache "
        "as on-access; the VM's profile decides the action)",
    )
    p.add_argument(
        "--control",
        metavar="SOCKET",
        help="SVM control socket for --vm (default /run/vmshield/control.sock)",
    )
    p.set_defaults(func=run)


# --- walking ------------------------------------------------------------------------------------


class Excluder:
    def __init__(self, patterns: list[str]) -> None:
        self.globs: list[str] = []
        self.regexes: list[re.Pattern[str]] = []
        for pat in patterns:
            if pat.startswith("re:"):
                try:
                    self.regexes.append(re.compile(pat[3:]))
                except re.error as exc:
                    raise SystemExit(
                        f"vmshield scan: bad --exclude regex {pat[3:]!r}: {exc}"
                    ) from None
            else:
                self.globs.append(pat)

    def __call__(self, path: str) -> bool:
        base = os.path.basename(path)
        for g in self.globs:
            if fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase(base, g):
                return True
        return any(r.search(path) for r in self.regexes)


@dataclass
class WalkStats:
    dirs: int = 0
    symlinks: int = 0
    excluded: int = 0
    problems: list[ScanResult] = field(default_factory=list)


def walk(paths: list[str], recursive: bool, excluded: Excluder, stats: WalkStats) -> Iterator[str]:
    """Files to scan. Symlinks met inside a directory are not followed (counted as skipped);
    a path named on the command line is scanned even if it is a link to a file."""
    for top in paths:
        if excluded(top):
            stats.excluded += 1
            continue
        if not os.path.lexists(top):
            stats.problems.append(_problem(top, "No such file or directory"))
            continue
        if not os.path.isdir(top):
            yield top
            continue
        stats.dirs += 1
        if not recursive:
            try:
                entries = sorted(os.scandir(top), key=lambda e: e.name)
            except OSError as exc:
                stats.problems.append(_problem(top, exc.strerror or str(exc)))
                continue
            for e in entries:
                if e.is_symlink():
                    stats.symlinks += 1
                elif e.is_file(follow_symlinks=False):
                    if excluded(e.path):
                        stats.excluded += 1
                    else:
                        yield e.path
            continue

        def onerror(exc: OSError, top: str = top) -> None:
            stats.problems.append(_problem(exc.filename or top, exc.strerror or str(exc)))

        for root, dirs, files in os.walk(top, onerror=onerror, followlinks=False):
            keep = []
            for d in sorted(dirs):
                full = os.path.join(root, d)
                if os.path.islink(full):
                    stats.symlinks += 1
                elif excluded(full):
                    stats.excluded += 1
                else:
                    keep.append(d)
            dirs[:] = keep
            stats.dirs += len(keep)
            for f in sorted(files):
                full = os.path.join(root, f)
                if os.path.islink(full):
                    stats.symlinks += 1
                elif excluded(full):
                    stats.excluded += 1
                else:
                    yield full


def _problem(path: str, reason: str) -> ScanResult:
    return ScanResult(path=path, status=Status.ERROR, errors=[reason])


# --- workers ------------------------------------------------------------------------------------

_worker_scanner: Scanner | None = None


def _worker_init(scanner: Scanner) -> None:
    global _worker_scanner
    _worker_scanner = scanner


def _worker_scan(path: str) -> ScanResult:
    assert _worker_scanner is not None
    return _worker_scanner.scan_path(path)


def _worker_scan_batch(paths: list[str]) -> list[ScanResult]:
    assert _worker_scanner is not None
    return [_worker_scanner.scan_path(p) for p in paths]


def _batches(files: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for f in files:
        batch.append(f)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _preload() -> None:
    """Import the container readers before forking, so N workers do not import them N times."""
    import importlib
    import warnings

    names = ["archive", "pdf", "ole2", "text", "streams", "executable", "zipfmt", "rtf", "upx"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in [f"vmshield.engines.file.containers.{n}" for n in names] + [
            "pypdf",
            "olefile",
            "oletools.olevba",
        ]:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a missing optional reader only costs speed here
                pass


def _pool(scanner: Scanner, jobs: int) -> ProcessPoolExecutor:
    # fork: workers inherit the loaded database instead of loading it N times.
    return ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_init,
        initargs=(scanner,),
    )


def _results(
    scanner: Scanner, files: Iterator[str], jobs: int, batch: int = 8
) -> Iterator[ScanResult]:
    if jobs <= 1:
        for f in files:
            yield scanner.scan_path(f)
        return
    # A worker killed by a crash in a C library on a hostile file must not end the scan: the
    # files it held are scanned again one by one in a fresh worker, and the file that kills
    # that one too is reported as an error. In-flight work is bounded (4 batches per worker).
    _preload()
    pool = _pool(scanner, jobs)
    pending: dict[Future[list[ScanResult]], list[str]] = {}
    retry: list[str] = []
    source = _batches(files, batch)
    try:
        while True:
            while len(pending) < 4 * jobs:
                nxt = next(source, None)
                if nxt is None:
                    break
                pending[pool.submit(_worker_scan_batch, nxt)] = nxt
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                paths = pending.pop(fut)
                try:
                    yield from fut.result()
                except BrokenProcessPool:
                    retry.extend(paths)
                    broken = True
            if broken:
                for paths in pending.values():
                    retry.extend(paths)
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                yield from _isolate(scanner, retry)
                retry = []
                pool = _pool(scanner, jobs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _isolate(scanner: Scanner, paths: list[str]) -> Iterator[ScanResult]:
    for path in paths:
        with _pool(scanner, 1) as one:
            try:
                yield from one.submit(_worker_scan_batch, [path]).result()
            except BrokenProcessPool:
                yield _problem(path, "the scanning process crashed on this file")


def _scan_stdin(scanner: Scanner, limits: Limits) -> ScanResult:
    data = sys.stdin.buffer.read(limits.max_file_size + 1)
    if len(data) > limits.max_file_size:
        return ScanResult(
            path="stdin",
            status=Status.LIMITS_EXCEEDED,
            limit="max_file_size",
            size=len(data),
            db_version=scanner.db.version,
        )
    return scanner.scan_bytes(data, "stdin")


# --- actions ------------------------------------------------------------------------------------


def _apply_action(args: argparse.Namespace, result: ScanResult) -> str | None:
    # Runs in the parent process, one file at a time, after the scan of that file.
    """Apply --action to an infected file; returns a line to print, or None."""
    if args.action == "report" or result.status is not Status.INFECTED:
        return None
    if result.path == "stdin" and "-" in args.paths:
        return "standard input: no action possible"
    from vmshield.cli._actions import apply

    return apply(args.action, result, args.quarantine_dir, args._scanner, args.fallback)


# --- output -------------------------------------------------------------------------------------


_CTRL = re.compile(r"[\x00-\x1f\x7f]")


def display(text: str) -> str:
    """A path as one safe line: control characters (a newline in a file name could forge a
    `FOUND` line) and undecodable bytes shown as \\xNN, never written raw."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CTRL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def lines_for(result: ScanResult) -> list[str]:
    p = result.path
    out = [
        f"{p}//{d.inner_path}: {d.name} FOUND" if d.inner_path else f"{p}: {d.name} FOUND"
        for d in result.detections
    ]
    if result.limit:
        where = f"{p}//{result.limit_path}" if result.limit_path else p
        out.append(f"{where}: Limits exceeded ({result.limit})")
    for e in result.encrypted:
        out.append(f"{p}//{e}: Encrypted")
    for e in result.errors:
        if not e.startswith("(speculative)"):  # JSON output keeps those notes
            out.append(f"{p}: ERROR {e}")
    if not out:
        out.append(f"{p}: OK")
    return out


class Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def update(self, files: int, nbytes: int, path: str) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        tail = path[-50:]
        sys.stderr.write(f"\r\x1b[K[{files} files, {nbytes / 1e6:.1f} MB] {tail}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    if getattr(args, "vm", None):
        from vmshield.svm.ondemand import run_vm_scan

        return run_vm_scan(args)
    started = time.time()
    t0 = time.monotonic()
    db_paths = args.db or [d for d in DEFAULT_DB_DIRS if os.path.isdir(d)]
    if not db_paths:
        print("vmshield scan: no database: give --db PATH (file or directory)", file=sys.stderr)
        return 2
    db = Database.load(db_paths)
    for rej in db.rejected:
        print(f"vmshield: {rej.file}:{rej.line}: {rej.reason}", file=sys.stderr)
    if db.signature_count == 0:
        print("vmshield scan: the database holds no usable signature", file=sys.stderr)
        return 2
    kw = {}
    for opt, attr in (
        ("max_filesize", "max_file_size"),
        ("max_scansize", "max_scan_size"),
        ("max_recursion", "max_recursion"),
        ("max_files", "max_files"),
        ("max_scantime", "max_scan_time"),
    ):
        v = getattr(args, opt)
        if v is not None:
            kw[attr] = v
    limits = Limits(**kw)
    scanner = Scanner(db, limits, containers=not args.no_containers)
    args._scanner = scanner  # disinfection re-scans the rebuilt file before writing it
    load_time = time.monotonic() - t0

    wstats = WalkStats()
    paths = [p for p in args.paths if p != "-"]
    files = walk(paths, args.recursive, Excluder(args.exclude), wstats)
    progress = Progress(
        args.progress == "always"
        or (args.progress == "auto" and sys.stderr.isatty() and not args.json)
    )
    counts = {"files": 0, "infected": 0, "errors": 0, "limits": 0, "encrypted": 0, "bytes": 0}
    out = sys.stdout

    def emit(result: ScanResult) -> None:
        counts["files"] += result.hashes is not None or result.limit is not None
        counts["bytes"] += result.size if result.hashes else 0
        counts["infected"] += result.status is Status.INFECTED
        counts["errors"] += result.status is Status.ERROR
        counts["limits"] += result.limit is not None
        counts["encrypted"] += bool(result.encrypted)
        action_line = _apply_action(args, result)
        progress.done()
        if args.json:
            obj = result.to_json()
            if action_line:
                obj["action"] = action_line
            out.write(json.dumps(obj) + "\n")
        else:
            for line in lines_for(result):
                if args.infected and not line.endswith(" FOUND"):
                    continue
                out.write(display(line) + "\n")
            if action_line:
                out.write(display(f"{result.path}: {action_line}") + "\n")
        progress.update(counts["files"], counts["bytes"], result.path)

    if "-" in args.paths:  # like clamscan: `-` scans standard input
        emit(_scan_stdin(scanner, limits))
    for result in _results(scanner, files, args.jobs):
        emit(result)
    for problem in wstats.problems:  # unreadable directories, missing paths
        emit(problem)
    progress.done()
    elapsed = time.time() - started
    if not args.json and not args.no_summary:
        s = db.stats
        mb = counts["bytes"] / (1024 * 1024)
        out.write(
            "\n----------- SCAN SUMMARY -----------\n"
            f"Known viruses: {db.signature_count}\n"
            f"Engine version: vmshield {__version__}\n"
            f"Database version: {db.version[:16]} ({s['md5']} md5, {s['sha1']} sha1, "
            f"{s['sha256']} sha256, {s['pe_section']} PE section, {s['ndb']} body, {s['ldb']} logical, {s['yara']} yara, "
            f"{s['fp']} allow-list; {len(db.rejected)} rejected)\n"
            f"Scanned directories: {wstats.dirs}\n"
            f"Scanned files: {counts['files']}\n"
            f"Infected files: {counts['infected']}\n"
            f"Limits exceeded: {counts['limits']}\n"
            f"Encrypted: {counts['encrypted']}\n"
            f"Total errors: {counts['errors']}\n"
            f"Skipped symlinks: {wstats.symlinks}\n"
            f"Excluded: {wstats.excluded}\n"
            f"Data scanned: {mb:.2f} MB\n"
            f"Database load time: {load_time:.3f} sec\n"
            f"Time: {elapsed:.3f} sec ({int(elapsed // 60)} m {int(elapsed % 60)} s)\n"
            f"Start Date: {time.strftime('%Y:%m:%d %H:%M:%S', time.localtime(started))}\n"
            f"End Date:   {time.strftime('%Y:%m:%d %H:%M:%S')}\n"
        )
    out.flush()
    if counts["errors"]:
        return 2
    return 1 if counts["infected"] else 0
