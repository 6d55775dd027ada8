"""The engine on traffic from the real kernel: a loopback HTTP exchange captured by tcpdump.

Real TCP (timestamps, SACK, window scaling, the kernel's segmentation), real pcap writer; only
loopback, bounded in count and time, tcpdump stopped by its PID.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vmshield.engines.net.config import EngineConfig
from vmshield.engines.net.engine import Engine
from vmshield.engines.net.pcap import read_packets

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to capture"),
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed"),
]

BODY = b"vmshield live capture " * 2000  # ~44 kB: several segments


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def test_real_loopback_http_exchange(tmp_path: Path) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = srv.server_address[1]
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    # tcpdump drops to its own user before writing: give it a directory it may write in.
    cap_dir = tmp_path / "cap"
    cap_dir.mkdir()
    cap_dir.chmod(0o1777)
    pcap = cap_dir / "lo.pcap"
    # -U: write each packet as it comes; -c bounds the count whatever happens.
    dump = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            "lo",
            "-U",
            "-n",
            "-c",
            "2000",
            "-w",
            str(pcap),
            f"tcp port {port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Ready once tcpdump says it is listening (read with a deadline, never blocking).
        deadline = time.monotonic() + 10
        said = b""
        assert dump.stderr is not None
        while b"listening on" not in said:
            assert time.monotonic() < deadline, f"tcpdump did not start: {said!r}"
            assert dump.poll() is None, said + dump.stderr.read()
            ready, _, _ = select.select([dump.stderr], [], [], 0.2)
            if ready:
                said += os.read(dump.stderr.fileno(), 4096)
        time.sleep(0.5)
        for path in ("/first?q=1", "/second"):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}", headers={"User-Agent": "vmshield-test/1"}
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.read() == BODY
        time.sleep(0.5)
    finally:
        dump.send_signal(signal.SIGINT)
        try:
            dump.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dump.kill()
            dump.wait()
        srv.shutdown()
        srv.server_close()

    e = Engine(EngineConfig(out_flow=True))
    events = []
    n = 0
    with open(pcap, "rb") as f:
        for rec in read_packets(f, name=str(pcap)):
            n += 1
            events.extend(e.process(rec.data, rec.ts, linktype=rec.linktype).events)
    events.extend(e.flush())
    assert n > 20
    http = sorted(
        (ev.data for ev in events if ev.event_type == "http"), key=lambda d: d["http"]["url"]
    )
    assert [h["http"]["url"] for h in http] == ["/first?q=1", "/second"]
    for h in http:
        assert h["http"]["hostname"] == "127.0.0.1"
        assert h["http"]["status"] == 200 and h["http"]["length"] == len(BODY)
        assert h["http"]["http_user_agent"] == "vmshield-test/1"
        assert h["dest_port"] == port and h["app_proto"] == "http"
    flows = [ev.data for ev in events if ev.event_type == "flow"]
    assert len(flows) == 2 and all(fl["flow"]["state"] == "closed" for fl in flows)
    assert not [ev for ev in events if ev.event_type == "anomaly"]
    assert e.stats()["stream_anomalies"] == 0


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certf, keyf = tmp_path / "c.pem", tmp_path / "k.pem"
    certf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyf.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certf, keyf


def _capture(tmp_path: Path, port: int, action) -> Path:  # type: ignore[no-untyped-def]
    cap_dir = tmp_path / "cap"
    cap_dir.mkdir(exist_ok=True)
    cap_dir.chmod(0o1777)
    pcap = cap_dir / f"{port}.pcap"
    dump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-U", "-n", "-c", "2000", "-w", str(pcap), f"tcp port {port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        said = b""
        assert dump.stderr is not None
        while b"listening on" not in said:
            assert time.monotonic() < deadline, f"tcpdump did not start: {said!r}"
            assert dump.poll() is None, said + dump.stderr.read()
            ready, _, _ = select.select([dump.stderr], [], [], 0.2)
            if ready:
                said += os.read(dump.stderr.fileno(), 4096)
        time.sleep(0.5)
        action()
        time.sleep(0.5)
    finally:
        dump.send_signal(signal.SIGINT)
        try:
            dump.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dump.kill()
            dump.wait()
    return pcap


def test_real_tls_handshake_from_openssl(tmp_path: Path) -> None:
    import socket
    import ssl

    certf, keyf = _self_signed(tmp_path, "svc.vmshield.test")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(certf, keyf)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(5)
    port = lsock.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = lsock.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(s.recv(100) * 10)
        except OSError:
            pass

    def talk() -> None:
        th = threading.Thread(target=serve, daemon=True)
        th.start()
        cctx = ssl.create_default_context(cafile=str(certf))
        cctx.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            cctx.wrap_socket(raw, server_hostname="svc.vmshield.test") as s,
        ):
            s.sendall(b"hello over tls")
            got = b""
            while len(got) < 140:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        th.join(5)

    try:
        pcap = _capture(tmp_path, port, talk)
    finally:
        lsock.close()
    e = Engine(EngineConfig(mode="ips"))
    events, actions = [], []
    with open(pcap, "rb") as f:
        for rec in read_packets(f, name=str(pcap)):
            r = e.process(rec.data, rec.ts, linktype=rec.linktype)
            events.extend(r.events)
            actions.append(r.verdict.action.name)
    events.extend(e.flush())
    (tls,) = [ev.data["tls"] for ev in events if ev.event_type == "tls"]
    assert tls["sni"] == "svc.vmshield.test"
    assert tls["version"] == "TLS 1.3"
    assert tls["client_alpns"] == ["h2", "http/1.1"]
    assert tls["ja3"]["string"].startswith("771,") and len(tls["ja3"]["hash"]) == 32
    assert tls["ja4"].startswith("t13d") and tls["ja4"][8:10] == "h2"
    assert tls["ja3s"]["string"].startswith("771,4865,") or tls["ja3s"]["string"].startswith(
        "771,4866,"
    )
    assert "BYPASS" in actions  # encrypted: the rest of the flow needs no inspection


def test_real_tls12_server_certificate(tmp_path: Path) -> None:
    import hashlib
    import socket
    import ssl

    from cryptography import x509

    from vmshield.engines.net.rules import Classification, RuleSet, Variables

    certf, keyf = _self_signed(tmp_path, "cert.vmshield.test")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the certificate travels in clear
    sctx.load_cert_chain(certf, keyf)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(5)
    port = lsock.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = lsock.accept()
            with sctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(s.recv(100))
        except OSError:
            pass

    def talk() -> None:
        th = threading.Thread(target=serve, daemon=True)
        th.start()
        cctx = ssl.create_default_context(cafile=str(certf))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            cctx.wrap_socket(raw, server_hostname="cert.vmshield.test") as s,
        ):
            s.sendall(b"ping")
            s.recv(100)
        th.join(5)

    try:
        pcap = _capture(tmp_path, port, talk)
    finally:
        lsock.close()
    rs = RuleSet.load(
        texts=[
            'alert tls any any -> any any (msg:"cert"; tls.cert_subject; content:"CN=cert.vmshield.test"; sid:99;)'
        ],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    e = Engine(EngineConfig(mode="ids"), rules=rs)
    events = []
    with open(pcap, "rb") as f:
        for rec in read_packets(f, name=str(pcap)):
            events.extend(e.process(rec.data, rec.ts, linktype=rec.linktype).events)
    events.extend(e.flush())
    (tls,) = [ev.data["tls"] for ev in events if ev.event_type == "tls"]
    der = x509.load_pem_x509_certificate(certf.read_bytes()).public_bytes(
        __import__(
            "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]
        ).Encoding.DER
    )
    assert tls["version"] == "TLS 1.2"
    assert tls["subject"] == "CN=cert.vmshield.test" and tls["issuerdn"] == "CN=cert.vmshield.test"
    assert tls["fingerprint"] == ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())
    assert [ev.data["alert"]["signature_id"] for ev in events if ev.event_type == "alert"] == [99]
