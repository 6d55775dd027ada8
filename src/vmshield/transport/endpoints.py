"""Where agents reach the introspection service: `unix:PATH`, `tcp://HOST:PORT`, `vsock://CID:PORT`.

AF_VSOCK is how KVM guests reach their host without a network (the host is CID 2). TCP is for any
hypervisor and always uses mutual TLS. Unix sockets serve agents on the same machine (the lab and
tests). All three carry the same frames (`protocol.py`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

VMADDR_CID_HOST = 2
VMADDR_CID_ANY = 0xFFFFFFFF


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # unix | tcp | vsock
    host: str = ""
    port: int = 0
    path: str = ""
    cid: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.path}"
        if self.scheme == "vsock":
            return f"vsock://{self.cid}:{self.port}"
        return f"tcp://{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """Parse an endpoint; ValueError names what is wrong."""
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"endpoint {text!r}: unix: needs a socket path")
        return Endpoint("unix", path=path)
    for scheme in ("tcp", "vsock"):
        prefix = scheme + "://"
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            host, sep, port_s = rest.rpartition(":")
            if not sep or not port_s.isdigit():
                raise ValueError(f"endpoint {text!r}: expected {prefix}HOST:PORT")
            port = int(port_s)
            if not 0 <= port <= (65535 if scheme == "tcp" else 0xFFFFFFFF):
                raise ValueError(f"endpoint {text!r}: port {port} out of range")
            host = host.strip("[]")
            if scheme == "vsock":
                if host in ("", "any", "*"):
                    return Endpoint("vsock", cid=VMADDR_CID_ANY, port=port)
                if host == "host":
                    return Endpoint("vsock", cid=VMADDR_CID_HOST, port=port)
                if not host.isdigit():
                    raise ValueError(
                        f"endpoint {text!r}: vsock CID must be a number, 'host' or 'any'"
                    )
                return Endpoint("vsock", cid=int(host), port=port)
            if not host:
                raise ValueError(f"endpoint {text!r}: missing host")
            return Endpoint("tcp", host=host, port=port)
    raise ValueError(f"endpoint {text!r}: expected unix:PATH, tcp://HOST:PORT or vsock://CID:PORT")


def vsock_socket(ep: Endpoint, listen: bool) -> socket.socket:
    """An AF_VSOCK stream socket bound (server) or connected (client) — blocking, then handed to asyncio.

    Raises OSError with a clear message when the kernel has no vsock transport (as on machines
    without vhost_vsock or a hypervisor).
    """
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise OSError("AF_VSOCK is not available in this Python build")
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create an AF_VSOCK socket: {exc.strerror}") from None
    try:
        if listen:
            sock.bind((ep.cid, ep.port))
            sock.listen(128)
        else:
            sock.settimeout(5.0)
            sock.connect((ep.cid, ep.port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"vsock {ep}: {exc.strerror}") from None
    return sock


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_server(
    ep: Endpoint, handler: Handler, tls: ssl.SSLContext | None = None
) -> asyncio.AbstractServer:
    if ep.scheme == "unix":
        if os.path.exists(ep.path):
            os.unlink(ep.path)
        server = await asyncio.start_unix_server(handler, path=ep.path, limit=2**16)
        os.chmod(ep.path, 0o660)
        return server
    if ep.scheme == "tcp":
        if tls is None:
            raise ValueError(f"{ep}: TCP endpoints require TLS (server certificate and client CA)")
        return await asyncio.start_server(handler, ep.host, ep.port, ssl=tls, limit=2**16)
    sock = vsock_socket(ep, listen=True)
    return await asyncio.start_server(handler, sock=sock, limit=2**16)


async def open_connection(
    ep: Endpoint, tls: ssl.SSLContext | None = None, server_hostname: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if ep.scheme == "unix":
        return await asyncio.open_unix_connection(ep.path, limit=2**16)
    if ep.scheme == "tcp":
        if tls is None:
            raise ValueError(f"{ep}: TCP endpoints require TLS (client certificate and CA)")
        return await asyncio.open_connection(
            ep.host, ep.port, ssl=tls, server_hostname=server_hostname or ep.host, limit=2**16
        )
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(None, vsock_socket, ep, False)
    return await asyncio.open_connection(sock=sock, limit=2**16)


def endpoint_port(server: asyncio.AbstractServer) -> int:
    """The port a TCP server bound (for ephemeral port 0)."""
    for s in getattr(server, "sockets", ()):
        name = s.getsockname()
        if isinstance(name, tuple) and len(name) >= 2:
            return int(name[1])
    return 0
