"""Scan workers: separate processes, each holding the signature database, fed by the scan service.

A scanner *factory* is named by `module:function`; called once in each worker with the database
paths, it returns `(scan, db_version)` where `scan(data, name)` returns a dict shaped like
`ScanResult.to_json()`. The default builds the file engine's `Scanner`; tests may name another.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
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


def _worker_main(conn: Any, spec: str, db_paths: list[str]) -> None:
    """One scan process: load the database, then answer requests on its pipe until it closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when workers stop
    try:
        _init(spec, db_paths)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ok", _version))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "scan":
            conn.send(_run(msg[1], msg[2]))
        elif msg[0] == "disinfect":
            conn.send(_disinfect(msg[1], msg[2], msg[3]))


class WorkerDied(RuntimeError):
    pass


@dataclass
class _Worker:
    proc: Any
    conn: Any


INLINE_PAYLOAD = 256 * 1024  # larger requests are written to the pipe from a thread


class WorkerPool:
    """Scan processes, each fed through its own pipe straight from the event loop.

    (concurrent.futures.ProcessPoolExecutor costs two extra thread hand-offs per call — about a
    millisecond on a busy 2-core host, half the budget of a cold on-access open.)
    """

    def __init__(self, workers: int, spec: str, db_paths: list[str]) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.workers = workers
        self.spec = spec
        self.db_paths = list(db_paths)
        self._idle: list[_Worker] = []
        self._waiters: deque[asyncio.Future[_Worker]] = deque()
        self._all: list[_Worker] = []
        self.restarts = 0
        self.closed = False
        self.db_version = ""
        try:
            for _ in range(workers):
                w = self._start()
                self._idle.append(w)
        except BaseException:
            self.close()
            raise

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=_worker_main, args=(child, self.spec, self.db_paths), daemon=True
        )
        proc.start()
        child.close()
        if not parent.poll(600):
            proc.kill()
            raise RuntimeError("scan worker did not load the database within 600 s")
        try:
            status, detail = parent.recv()
        except EOFError:
            raise RuntimeError("scan worker died while loading the database") from None
        if status != "ok":
            proc.join(5)
            raise RuntimeError(f"cannot load the signature database: {detail}")
        self.db_version = str(detail)
        w = _Worker(proc, parent)
        self._all.append(w)
        return w

    async def _acquire(self) -> _Worker:
        if self._idle:
            return self._idle.pop()
        fut: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(fut.result())
            raise

    def _release(self, w: _Worker) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(w)
                return
        self._idle.append(w)

    def _replace(self, w: _Worker) -> _Worker:
        """A worker died (a crash in a parser): start another in its place."""
        with contextlib.suppress(Exception):
            w.conn.close()
            w.proc.kill()
            w.proc.join(1)
        if w in self._all:
            self._all.remove(w)
        self.restarts += 1
        return self._start()

    @staticmethod
    def _blocking_call(w: _Worker, msg: tuple[Any, ...]) -> Any:
        w.conn.send(msg)
        return w.conn.recv()

    async def _call(self, msg: tuple[Any, ...], size: int) -> Any:
        w = await self._acquire()
        loop = asyncio.get_running_loop()
        try:
            if size > INLINE_PAYLOAD or msg[0] == "disinfect":
                return await loop.run_in_executor(None, self._blocking_call, w, msg)
            fut: asyncio.Future[Any] = loop.create_future()

            def readable() -> None:
                loop.remove_reader(w.conn.fileno())
                try:
                    fut.set_result(w.conn.recv())
                except (EOFError, OSError) as exc:
                    fut.set_exception(WorkerDied(str(exc) or "scan worker exited"))

            loop.add_reader(w.conn.fileno(), readable)
            try:
                w.conn.send(msg)
                return await fut
            finally:
                with contextlib.suppress(Exception):
                    loop.remove_reader(w.conn.fileno())
        except (EOFError, OSError, WorkerDied):
            if self.closed:  # the pool was replaced (new database) while this scan ran
                raise WorkerDied("the scan pool was closed") from None
            w = await asyncio.to_thread(self._replace, w)
            raise WorkerDied("the scan worker died on this file") from None
        finally:
            if not self.closed:
                self._release(w)

    async def scan(self, data: bytes, name: str) -> dict[str, Any]:
        try:
            return await self._call(("scan", data, name), len(data))  # type: ignore[no-any-return]
        except WorkerDied as exc:
            return {"status": "error", "errors": [str(exc)], "detections": []}

    async def disinfect(self, data: bytes, name: str, inner_paths: list[str]) -> bytes | None:
        try:
            return await self._call(("disinfect", data, name, inner_paths), len(data))  # type: ignore[no-any-return]
        except WorkerDied:
            return None

    def close(self) -> None:
        self.closed = True
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(WorkerDied("the scan pool was closed"))
        for w in self._all:
            with contextlib.suppress(Exception):
                w.conn.close()
        for w in self._all:
            with contextlib.suppress(Exception):
                w.proc.join(0.5)
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(1)
        self._all.clear()
        self._idle.clear()
