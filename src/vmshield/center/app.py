"""Assembles the center: data directory, database, PKI, the FastAPI app, background jobs, and the
HTTPS server (uvicorn) that also asks for (but does not require) client certificates, so SVMs
use mutual TLS on the same port the console uses."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vmshield import __version__
from vmshield.center.context import CenterContext, default_db_url, open_center
from vmshield.center.store import Conflict, NotFound

log = logging.getLogger("vmshield.center")
__all__ = ["CenterContext", "create_app", "default_db_url", "open_center", "serve"]


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"strict-transport-security", b"max-age=31536000"),
    # The console needs nothing from elsewhere and is never framed (no clickjacking).
    (b"x-frame-options", b"DENY"),
]
_CSP = (
    b"content-security-policy",
    b"default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
)


class TimingHeaders:
    """Latency per route into the metrics, and security headers on every response. A plain ASGI
    middleware: Starlette's BaseHTTPMiddleware copies request bodies through a stream, which
    costs on multi-megabyte event batches."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        docs = scope["path"].startswith("/api/v1/docs")

        async def send_with_headers(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                have = {k.lower() for k, _ in msg.get("headers", [])}
                extra = [h for h in _SECURITY_HEADERS if h[0] not in have]
                if not docs and _CSP[0] not in have:
                    extra.append(_CSP)
                msg = {**msg, "headers": [*msg.get("headers", []), *extra]}
            await send(msg)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            self.metrics.request_seconds.labels(getattr(route, "path", "other")).observe(
                time.perf_counter() - t0
            )


class BodyLimit:
    """Refuses request bodies over a limit before anything parses them (413), so an
    unauthenticated client cannot make the center buffer gigabytes: FastAPI reads a JSON body
    before it checks the caller's token. Event batches get a larger limit than the rest."""

    def __init__(self, app: Any, default: int = 1 << 20, large: int = 32 << 20) -> None:
        self.app = app
        self.default = default
        self.large = large

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.large if scope["path"] == "/api/v1/svm/events" else self.default
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                await _too_large(send, limit)
                return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Any, limit: int) -> None:
    body = b'{"detail":"request body larger than %d bytes"}' % limit
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(c: CenterContext) -> FastAPI:
    from vmshield.center import api

    app = FastAPI(
        title="vmshield center",
        version=__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.ctx = c
    app.include_router(api.router)
    try:
        from vmshield.center import console
    except ImportError:  # pragma: no cover
        console = None  # type: ignore[assignment]
    if console is not None:
        console.mount(app)

    def _err(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"detail": msg}, status_code=status)

    @app.exception_handler(NotFound)
    async def _nf(_r: Request, exc: NotFound) -> JSONResponse:
        return _err(404, f"not found: {exc}")

    @app.exception_handler(Conflict)
    async def _cf(_r: Request, exc: Conflict) -> JSONResponse:
        return _err(409, str(exc))

    @app.exception_handler(ValidationError)
    async def _ve(_r: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors()]},
            status_code=422,
        )

    @app.exception_handler(ValueError)
    async def _val(_r: Request, exc: ValueError) -> JSONResponse:
        return _err(422, str(exc))

    @app.exception_handler(PermissionError)
    async def _perm(_r: Request, exc: PermissionError) -> JSONResponse:
        return _err(403, str(exc))

    _ = (RequestValidationError, StarletteHTTPException)

    app.add_middleware(TimingHeaders, metrics=c.metrics)

    @app.get("/metrics", include_in_schema=False)
    def metrics(p: Any = api.VIEWER) -> Response:
        return Response(c.metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_middleware(BodyLimit)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def background_loop(c: CenterContext, interval: float = 2.0) -> None:
    """Exports and retention. Safe on every replica at once (cursor compare-and-set, deletes)."""
    from vmshield.center.export import ExportRunner

    runner = ExportRunner(c.store, c.metrics)
    last_retention = 0.0
    while not c.stop.wait(interval):
        try:
            runner.run_once()
            if time.time() - last_retention > 60:
                with c.store.sessions.begin() as s:
                    c.store.retention(s)
                last_retention = time.time()
        except Exception:  # keep the loop alive; the error is logged and retried next round
            log.exception("background job failed")
    runner.close()


# ---- HTTPS server with optional client certificates ------------------------------------------


def _peer_protocol(base: type) -> type:
    class PeerCertProtocol(base):  # type: ignore[misc, valid-type]
        """Puts the verified client certificate (DER) into each request's scope state."""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            ssl_obj = transport.get_extra_info("ssl_object")
            der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
            # Per-connection copy: app_state is shared by every connection otherwise.
            self.app_state = {**self.app_state, "vmshield_peer_cert": der}  # type: ignore[has-type]

    return PeerCertProtocol


def serve(
    c: CenterContext,
    host: str,
    port: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    ready: threading.Event | None = None,
    server_box: list[Any] | None = None,
    sock: Any = None,
    inventory_sync: bool = True,
) -> None:
    import uvicorn

    try:  # C parser when present (much faster for large event batches); h11 otherwise
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]

    app = create_app(c)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certfile or c.pki.server_cert_path),
        ssl_keyfile=str(keyfile or c.pki.server_key_path),
        # Ask for a client certificate, verify it against our CA if one is sent; the console's
        # browsers send none, the SVM endpoints refuse requests without one.
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        ssl_ca_certs=str(c.pki.ca_cert_path),
        http=_peer_protocol(base),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        limit_concurrency=1000,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    if server_box is not None:
        server_box.append(server)
    bg = threading.Thread(target=background_loop, args=(c,), daemon=True, name="center-bg")
    bg.start()
    if inventory_sync:
        from vmshield.center.sync import SyncManager

        threading.Thread(
            target=SyncManager(c.store, c.stop).run, daemon=True, name="inventory-sync"
        ).start()
    if ready is not None:

        def _notify() -> None:
            while not server.started and not c.stop.is_set():
                time.sleep(0.05)
            ready.set()

        threading.Thread(target=_notify, daemon=True).start()
    try:
        server.run(sockets=[sock] if sock is not None else None)
    finally:
        c.stop.set()
        bg.join(timeout=10)


def serve_workers(
    data_dir: Path,
    db_url: str | None,
    host: str,
    port: int,
    workers: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> None:
    """Several worker processes on one listening socket: replicas of the center on one machine
    (everything shared lives in the database), so ingestion uses more than one core."""
    import multiprocessing as mp
    import signal
    import socket

    first = open_center(data_dir, db_url)  # keys and migrations, once, before the fork
    first.store.engine.dispose()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)

    def child() -> None:
        c = open_center(data_dir, db_url)
        serve(c, host, port, certfile, keyfile, sock=sock)

    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=child, name=f"center-worker-{i}") for i in range(workers)]
    for p in procs:
        p.start()

    def _stop(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.pid and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for p in procs:
        p.join()
