"""The services a lab VM runs so real clients have something to talk to: HTTP, HTTPS and DNS.

Run inside a VM's namespace by `lab up`:
    python -m vmshield.lab.servers --name vm1 --address 10.231.7.11 --http 80 --https 443 --dns 53
The DNS server answers A queries for any name with the VM's own address (names ending in
`.lab` are the lab's zone); other query types get an empty answer. Bounded: one UDP datagram at a
time, requests over 4 KiB are ignored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import ipaddress
import os
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading

_PAGE = (
    "<!doctype html><html><head><title>{name}</title></head>"
    "<body><h1>lab VM {name}</h1><p>path: {path}</p></body></html>\n"
)


def _handler(name: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "vmshield-lab/1"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.startswith("/bytes/"):
                # Bulk download for benchmarks and bypass tests, bounded at 64 MiB.
                try:
                    size = min(int(self.path.split("/")[2]), 64 << 20)
                except ValueError:
                    self.send_error(400, "bad size")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"\0" * 65536
                left = size
                while left > 0:
                    n = min(left, len(chunk))
                    self.wfile.write(chunk[:n])
                    left -= n
                return
            body = _PAGE.format(name=name, path=self.path.replace("<", "&lt;")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            # Uploads are read and discarded (bounded), then answered like a GET: lets tests and
            # benchmarks move bulk data in both directions of one connection.
            try:
                left = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                self.send_error(400, "bad Content-Length")
                return
            if not 0 <= left <= 64 << 20:
                self.send_error(413, "upload too large")
                return
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    return
                left -= len(chunk)
            self.do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _TlsServer(http.server.ThreadingHTTPServer):
    """TLS handshake in the connection's thread, with a timeout: a client that never finishes
    (e.g. reset by the filter mid-handshake) must not stall the accept loop."""

    daemon_threads = True
    ssl_context: ssl.SSLContext

    def finish_request(self, request, client_address):  # type: ignore[no-untyped-def]
        request.settimeout(10)
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        super().finish_request(tls, client_address)


def _self_signed(name: str, directory: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name}.lab")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.lab")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def dns_answer(query: bytes, address: str) -> bytes | None:
    """A minimal authoritative answer: A → `address`, anything else → no data. None for garbage."""
    if len(query) < 12 or len(query) > 4096:
        return None
    qid, flags, qd, _an, _ns, _ar = struct.unpack("!6H", query[:12])
    if flags & 0x8000 or qd != 1:
        return None
    pos = 12
    labels = 0
    while True:
        if pos >= len(query):
            return None
        ln = query[pos]
        if ln == 0:
            pos += 1
            break
        if ln & 0xC0 or labels > 127:
            return None
        pos += 1 + ln
        labels += 1
    if pos + 4 > len(query):
        return None
    qtype, _qclass = struct.unpack("!HH", query[pos : pos + 4])
    question = query[12 : pos + 4]
    answers = b""
    count = 0
    if qtype == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + ipaddress.IPv4Address(address).packed
        count = 1
    header = struct.pack("!6H", qid, 0x8400 | (flags & 0x0100), 1, count, 0, 0)
    return header + question + answers


def _serve_dns(address: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    while True:
        data, peer = sock.recvfrom(4096)
        reply = dns_answer(data, address)
        if reply is not None:
            sock.sendto(reply, peer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vmshield.lab.servers")
    p.add_argument("--name", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--http", type=int, default=80)
    p.add_argument("--https", type=int, default=443)
    p.add_argument("--dns", type=int, default=53)
    p.add_argument("--lab", default="", help="lab prefix (lets `lab down` find this process)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    http.server.ThreadingHTTPServer.daemon_threads = True
    httpd = http.server.ThreadingHTTPServer(("0.0.0.0", args.http), _handler(args.name))
    threads = [threading.Thread(target=httpd.serve_forever, daemon=True)]
    if args.https:
        tmp = tempfile.mkdtemp(prefix="vmshield-lab-tls-")
        cert, key = _self_signed(args.name, tmp)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        httpsd = _TlsServer(("0.0.0.0", args.https), _handler(args.name))
        httpsd.ssl_context = ctx
        threads.append(threading.Thread(target=httpsd.serve_forever, daemon=True))
    if args.dns:
        threads.append(
            threading.Thread(target=_serve_dns, args=(args.address, args.dns), daemon=True)
        )
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
