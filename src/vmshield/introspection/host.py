"""`vmshield introspection run`: the relay alone, in its own process, reaching the SVM over a link."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from vmshield.introspection.auth import Authenticator
from vmshield.introspection.relay import Relay
from vmshield.svm.link import RemoteScanService
from vmshield.transport.endpoints import Endpoint, start_server

log = logging.getLogger("vmshield.introspection")


@dataclass
class IntrospectionOptions:
    listen: list[Endpoint] = field(default_factory=list)
    svm: Endpoint | None = None
    control: str = ""
    agent_tls: ssl.SSLContext | None = None  # server side, for tcp agent endpoints
    svm_tls: ssl.SSLContext | None = None  # client side, for a tcp SVM link
    svm_server_name: str | None = None
    max_inflight: int = 64


class IntrospectionHost:
    def __init__(self, auth: Authenticator, opts: IntrospectionOptions) -> None:
        if opts.svm is None:
            raise ValueError("the SVM endpoint (--svm) is required")
        self.opts = opts
        self.remote = RemoteScanService(opts.svm, opts.svm_tls, opts.svm_server_name)
        self.relay = Relay(self.remote, auth, opts.max_inflight)  # type: ignore[arg-type]

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        servers: list[asyncio.AbstractServer] = []
        link = asyncio.create_task(self.remote.run(stop))
        try:
            with contextlib.suppress(
                asyncio.TimeoutError
            ):  # agents are answered by failure modes meanwhile
                await asyncio.wait_for(self.remote.connected.wait(), 10)
            for ep in self.opts.listen:
                servers.append(await start_server(ep, self.relay.handle, self.opts.agent_tls))
                log.info("listening for agents on %s", ep)
            if self.opts.control:
                if os.path.exists(self.opts.control):
                    os.unlink(self.opts.control)
                Path(self.opts.control).parent.mkdir(parents=True, exist_ok=True)
                servers.append(
                    await asyncio.start_unix_server(self.relay.control, path=self.opts.control)
                )
                os.chmod(self.opts.control, 0o600)
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            for s in servers:
                s.close()
            for sess in list(self.relay.sessions.values()):
                await sess.conn.close()
            link.cancel()
            with contextlib.suppress(BaseException):
                await link
