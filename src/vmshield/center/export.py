"""SIEM export: syslog (RFC 5424) over UDP, TCP or TLS carrying CEF or JSON, and JSON lines.

TCP and TLS use octet-counting framing (RFC 6587 / RFC 5425). Each exporter keeps a cursor (the
last event seq shipped) in the database; it advances only after a batch has been sent, so a SIEM
that is down gets the events later rather than never.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from vmshield import __version__
from vmshield.center.db import EventRow, Exporter

UDP_MAX = 8192  # a datagram larger than this is cut (RFC 5426 says receivers take >= 2048)
# Events committed out of seq order by concurrent transactions: wait this long before shipping.
SETTLE_SECONDS = 2.0
_FACILITY = 13  # log audit
_SEV = {1: 2, 2: 3, 3: 4, 4: 6}  # ours (1 high) -> syslog severity (crit, err, warning, info)
_CEF_SEV = {1: 10, 2: 7, 3: 4, 4: 1}


def validate_exporter(kind: str, transport: str, address: str) -> None:
    if kind == "jsonl":
        if not os.path.isabs(address):
            raise ValueError(f"address: {address!r} must be an absolute file path for jsonl")
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address: {address!r} is not host:port")


def _cef_escape_header(v: str) -> str:
    return v.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _cef_escape_ext(v: str) -> str:
    return v.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n").replace("\r", "\\r")


def cef(ev: dict[str, Any]) -> str:
    """One event in ArcSight CEF: `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Ext`."""
    etype = str(ev.get("event_type", "event"))
    a = ev.get("alert")
    alert: dict[str, Any] = a if isinstance(a, dict) else {}
    sig_id = str(alert.get("signature_id") or etype)
    name = str(alert.get("signature") or ev.get("detection") or etype)
    sev = _CEF_SEV.get(int(ev.get("severity", 3)), 4)
    ext: dict[str, Any] = {
        "rt": ev.get("timestamp"),
        "externalId": ev.get("event_id"),
        "cat": etype,
        "src": ev.get("src_ip"),
        "spt": ev.get("src_port"),
        "dst": ev.get("dest_ip"),
        "dpt": ev.get("dest_port"),
        "proto": ev.get("proto"),
        "dvchost": ev.get("host"),
        "cs1Label": "vm" if ev.get("vm") else None,
        "cs1": ev.get("vm"),
    }
    fv = ev.get("file")
    f: dict[str, Any] = fv if isinstance(fv, dict) else {}
    if f:
        ext["filePath"] = f.get("path")
        ext["fileHash"] = f.get("sha256")
        ext["act"] = f.get("action")
    if ev.get("action"):
        ext["act"] = ev.get("action")
    parts = [f"{k}={_cef_escape_ext(str(v))}" for k, v in ext.items() if v not in (None, "")]
    head = "|".join(
        _cef_escape_header(x) for x in ("vmshield", "vmshield", __version__, sig_id, name, str(sev))
    )
    return f"CEF:0|{head}|" + " ".join(parts)


def syslog_5424(ev: dict[str, Any], msg: str, hostname: str) -> bytes:
    pri = _FACILITY * 8 + _SEV.get(int(ev.get("severity", 3)), 4)
    ts = _rfc3339(str(ev.get("timestamp", "")))
    msgid = str(ev.get("event_type", "-"))[:32] or "-"
    host = (str(ev.get("host") or hostname) or "-")[:255].replace(" ", "_")
    return f"<{pri}>1 {ts} {host} vmshield - {msgid} - ".encode() + b"\xef\xbb\xbf" + msg.encode()


def _rfc3339(ts: str) -> str:
    # Suricata style "...+0000" -> RFC 3339 "...+00:00".
    if len(ts) > 5 and ts[-5] in "+-" and ts[-4:].isdigit():
        return ts[:-2] + ":" + ts[-2:]
    return ts or "-"


class Sender:
    """One open destination; reconnects on the next batch after an error."""

    def __init__(self, x: Exporter) -> None:
        self.kind = x.kind
        self.transport = x.transport
        self.address = x.address
        self.fmt = x.fmt
        self.ca_pem = (x.options or {}).get("ca_pem")
        self.sock: socket.socket | None = None
        self.hostname = socket.gethostname()

    def _connect(self) -> socket.socket:
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]")
        if self.transport == "udp":
            info = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0]
            s = socket.socket(info[0], socket.SOCK_DGRAM)
            s.connect(info[4])
            return s
        raw = socket.create_connection((host, int(port)), timeout=10)
        if self.transport == "tls":
            ctx = (
                ssl.create_default_context(cadata=self.ca_pem)
                if self.ca_pem
                else (ssl.create_default_context())
            )
            return ctx.wrap_socket(raw, server_hostname=host)
        return raw

    def render(self, ev: dict[str, Any]) -> bytes:
        msg = cef(ev) if self.fmt == "cef" else json.dumps(ev, separators=(",", ":"))
        if self.kind == "jsonl":
            return json.dumps(ev, separators=(",", ":")).encode() + b"\n"
        return syslog_5424(ev, msg, self.hostname)

    def send(self, events: Sequence[dict[str, Any]]) -> None:
        if self.kind == "jsonl":
            with open(self.address, "ab") as f:
                f.write(b"".join(self.render(e) for e in events))
                f.flush()
                os.fsync(f.fileno())
            return
        if self.sock is None:
            self.sock = self._connect()
        try:
            if self.transport == "udp":
                for e in events:
                    self.sock.send(self.render(e)[:UDP_MAX])
            else:
                out = bytearray()
                for e in events:
                    m = self.render(e)
                    out += str(len(m)).encode() + b" " + m
                self.sock.sendall(bytes(out))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            try:
                if isinstance(self.sock, ssl.SSLSocket):
                    with contextlib.suppress(OSError, ValueError):
                        self.sock.unwrap()  # close_notify: the SIEM knows nothing was cut
                self.sock.close()
            finally:
                self.sock = None


class ExportRunner:
    """Ships new events to every enabled exporter; call `run_once` periodically."""

    def __init__(self, store: Any, metrics: Any = None, batch: int = 1000) -> None:
        self.store = store
        self.metrics = metrics
        self.batch = batch
        self.senders: dict[int, Sender] = {}

    def run_once(self) -> int:
        shipped = 0
        with self.store.sessions() as s:
            exporters = list(s.scalars(select(Exporter).where(Exporter.enabled.is_(True))))
            settled = s.scalar(
                select(func.max(EventRow.seq)).where(
                    EventRow.received_at < time.time() - SETTLE_SECONDS
                )
            )
        if settled is None:
            return 0
        for x in exporters:
            sender = self.senders.get(x.id)
            if sender is None or sender.address != x.address:
                sender = self.senders[x.id] = Sender(x)
            cursor = x.cursor
            while cursor < settled:
                with self.store.sessions() as s:
                    rows = list(
                        s.execute(
                            select(EventRow.seq, EventRow.body)
                            .where(EventRow.seq > cursor, EventRow.seq <= settled)
                            .order_by(EventRow.seq)
                            .limit(self.batch)
                        )
                    )
                if not rows:
                    break
                try:
                    sender.send([json.loads(b) for _, b in rows])
                except OSError as exc:
                    self._error(x.id, f"{type(exc).__name__}: {exc}")
                    break
                new_cursor = rows[-1][0]
                with self.store.sessions.begin() as s:
                    # Compare-and-set: with replicas, only one advances (and ships) a batch.
                    n = s.execute(
                        update(Exporter)
                        .where(Exporter.id == x.id, Exporter.cursor == cursor)
                        .values(cursor=new_cursor, last_error="")
                    ).rowcount
                if n != 1:
                    break
                if self.metrics is not None:
                    self.metrics.exported.labels(x.name).inc(len(rows))
                shipped += len(rows)
                cursor = new_cursor
        return shipped

    def _error(self, exp_id: int, msg: str) -> None:
        with self.store.sessions.begin() as s:
            s.execute(update(Exporter).where(Exporter.id == exp_id).values(last_error=msg[:1000]))

    def close(self) -> None:
        for sd in self.senders.values():
            sd.close()


def jsonl_path_ok(path: str) -> bool:
    return Path(path).parent.is_dir()
