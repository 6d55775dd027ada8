"""Scan workers: separate processes, each holding the signature database, fed by the scan service.

A scanner *factory* is named by `module:function`; called once in each worker with the database
paths, it returns `(scan, db_version)` where `scan(data, name)` returns a dict shaped like
`ScanResult.to_json()`. The default builds the file engine's `Scanner`; tests may name another.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

ScanFn = Callable[[bytes, str], dict[str, Any]]
DEFAULT_FACTORY = "vmshield.svm.workers:engine_scanner"

_scan: ScanFn | None = None
_version = ""


def engine_scanner(db_paths: list[str]) -> tuple[ScanFn, str]:
    """The file engine: `Database.load(paths)` and `Scanner(db, limits)`."""
    from vmshield.engines.file.database import Database
    from vmshield.engines.file.limits import Limits
    from vmshield.engines.file.scanner import Scanner

    db = Database.load(db_paths)
    scanner = Scanner(db, Limits())

    def scan(data: bytes, name: str) -> dict[str, Any]:
        return scanner.scan_bytes(data, name).to_json()  # type: ignore[no-any-return]

    return scan, str(db.version)


def load_factory(spec: str) -> Callable[[list[str]], tuple[ScanFn, str]]:
    mod_name, sep, fn_name = spec.partition(":")
    if not sep:
        raise ValueError(f"scanner factory {spec!r}: expected module:function")
    fn = getattr(importlib.import_module(mod_name), fn_name)
    return fn  # type: ignore[no-any-return]


def _init(spec: str, db_paths: list[str]) -> None:
    global _scan, _version
    os.nice(0)
    _scan, _version = load_factory(spec)(db_paths)


def _version_of() -> str:
    return _version


def _run(data: bytes, name: str) -> dict[str, Any]:
    assert _scan is not None
    try:
        out = _scan(data, name)
    except Exception as exc:  # one bad file never kills a worker
        out = {"status": "error", "errors": [f"{type(exc).__name__}: {exc}"], "detections": []}
    out.setdefault("db_version", _version)
    return out


def _disinfect(data: bytes, name: str, inner_paths: list[str]) -> bytes | None:
    """Disinfected content (the file engine removes the infected members), or None when the file
    cannot be cleaned or the cleaned content still does not scan clean."""
    try:
        from vmshield.engines.file.disinfect import disinfect
    except ImportError:
        return None
    try:
        res = disinfect(data, inner_paths)
    except Exception:
        return None
    if not res.ok or res.data is None or res.data == data:
        return None
    if _run(res.data, name).get("status") != "clean":
        return None
    return res.data


class WorkerPool:
    def __init__(self, workers: int, spec: str, db_paths: list[str]) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.workers = workers
        self.spec = spec
        self.db_paths = list(db_paths)
        self._pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init, initargs=(spec, self.db_paths)
        )
        # Loading the database in a worker also tells us its version (and surfaces load errors now).
        self.db_version: str = self._pool.submit(_version_of).result(timeout=600)

    def scan(self, data: bytes, name: str) -> Future[dict[str, Any]]:
        return self._pool.submit(_run, data, name)

    def disinfect(self, data: bytes, name: str, inner_paths: list[str]) -> Future[bytes | None]:
        return self._pool.submit(_disinfect, data, name, inner_paths)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
