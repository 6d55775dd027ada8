"""The SVM's side of the center: enrolment, then mutual TLS for heartbeats, configuration and
events.

Enrolment (`enroll(url, token, data_dir)`): the token is `<secret>.<sha256 of the center's CA>`.
The SVM fetches the CA, checks it against the fingerprint before trusting anything (so a man in
the middle cannot enrol it to another center), makes its own key (never sent) and a CSR, and gets
back a client certificate signed by that CA. From then on every request uses that certificate
and trusts only that CA.

Files in `<data_dir>/center/`: ca.pem, client.pem, client.key (0600), center.json.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from vmshield import __version__
from vmshield.svm.spool import Spool

log = logging.getLogger("vmshield.svm.center")

DEFAULT_DATA_DIR = Path(os.environ.get("VMSHIELD_SVM_DATA", "/var/lib/vmshield/svm"))
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
MAX_BACKOFF = 30.0
MAX_BATCH_BYTES = 8 * 1024 * 1024


class EnrolError(Exception):
    pass


def _fingerprint_pem(pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from vmshield.center.pki import fingerprint_der

    cert = x509.load_pem_x509_certificate(pem)
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def _pinned_context(ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    # The CA is the center's own, pinned by fingerprint at enrolment, and signs only the center's
    # server certificate (serverAuth) and SVM certificates (clientAuth, refused as a server by
    # OpenSSL's purpose check). So the center may be reached by any name or address.
    ctx.check_hostname = False
    return ctx


def enroll(
    url: str, token: str, data_dir: str | Path | None = None, host_name: str | None = None
) -> dict[str, Any]:
    """Enrol this SVM with the center at `url` using a one-time deployment token."""
    data = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    base = url.rstrip("/")
    if not base.startswith("https://"):
        raise EnrolError(f"center URL {url!r} must be https://")
    secret, sep, expected_fp = token.strip().partition(".")
    if not sep or len(expected_fp) != 64:
        raise EnrolError("token is not an enrolment token (<secret>.<CA fingerprint>)")
    # Fetched without verification on purpose: the fingerprint check below is the verification.
    with httpx.Client(verify=False, timeout=TIMEOUT) as c:  # noqa: S501
        r = c.get(f"{base}/api/v1/enroll/ca")
        r.raise_for_status()
        ca_pem = r.text
    try:
        got_fp = _fingerprint_pem(ca_pem.encode())
    except ValueError:
        raise EnrolError("the center did not send a CA certificate") from None
    if not hmac.compare_digest(got_fp, expected_fp.lower()):
        raise EnrolError(
            "the center's CA does not match the token's fingerprint (wrong center, or intercepted)"
        )
    from vmshield.center.pki import make_key_and_csr, write_private

    key_pem, csr_pem = make_key_and_csr(host_name or socket.gethostname())
    with httpx.Client(verify=_pinned_context(ca_pem), timeout=TIMEOUT) as c:
        r = c.post(f"{base}/api/v1/enroll", json={"token": token.strip(), "csr": csr_pem.decode()})
    if r.status_code != 200:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text[:200]
        raise EnrolError(f"the center refused enrolment ({r.status_code}): {detail}")
    body = r.json()
    d = data / "center"
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    write_private(d / "client.key", key_pem)
    (d / "client.pem").write_text(body["certificate"])
    (d / "ca.pem").write_text(ca_pem)
    info = {"url": base, "deployment": body["deployment"], "host": body["host"]}
    tmp = d / "center.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(d / "center.json")
    return info


@dataclass
class ShipStats:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: int = 0


class CenterClient:
    """Mutual-TLS client of an enrolled SVM."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.dir = (Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR) / "center"
        info_path = self.dir / "center.json"
        if not info_path.exists():
            raise EnrolError(f"not enrolled: {info_path} is missing (run vmshield svm --enroll)")
        info = json.loads(info_path.read_text())
        self.url: str = info["url"]
        self.deployment: int = int(info["deployment"])
        self.host: str = info["host"]
        ctx = _pinned_context((self.dir / "ca.pem").read_text())
        ctx.load_cert_chain(self.dir / "client.pem", self.dir / "client.key")
        self.http = httpx.Client(base_url=self.url, verify=ctx, timeout=TIMEOUT)
        self.stats = ShipStats()

    def close(self) -> None:
        self.http.close()

    def heartbeat(
        self,
        db_versions: dict[str, str] | None = None,
        health: str = "ok",
        detail: dict[str, str] | None = None,
        load: dict[str, float] | None = None,
    ) -> int:
        """Report state; returns the center's configuration version."""
        if load is None:
            la1, la5, _ = os.getloadavg()
            load = {"load1": la1, "load5": la5}
        r = self.http.post(
            "/api/v1/svm/heartbeat",
            json={
                "version": __version__,
                "db_versions": db_versions or {},
                "load": load,
                "health": health,
                "detail": detail or {},
            },
        )
        r.raise_for_status()
        return int(r.json()["config_version"])

    def fetch_config(self, since: int = 0, wait: float = 0.0) -> dict[str, Any]:
        """This host's configuration; with `since`/`wait`, long-polls for a newer version."""
        r = self.http.get(
            "/api/v1/svm/config",
            params={"since": since, "wait": wait},
            timeout=httpx.Timeout(wait + 30.0, connect=10.0),
        )
        r.raise_for_status()
        return dict(r.json())

    def ship_once(self, spool: Spool, batch: int = 1000) -> int:
        """Send the oldest batch of the spool; delete it from the spool once the center has it.

        Raises on any failure, leaving the spool untouched (the batch is sent again later and the
        center ignores the ids it already has).
        """
        items = spool.peek(batch)
        if not items:
            return 0
        # Stay well under the center's 32 MiB body limit whatever the events' sizes.
        total = 0
        for n, (_seq, b) in enumerate(items):
            total += len(b) + 1
            if total > MAX_BATCH_BYTES and n > 0:
                items = items[:n]
                break
        body = b'{"events":[' + b",".join(b for _, b in items) + b"]}"
        r = self.http.post(
            "/api/v1/svm/events", content=body, headers={"content-type": "application/json"}
        )
        r.raise_for_status()
        res = r.json()
        if res.get("rejected"):
            # Malformed events will never be accepted; keep going, but say so.
            log.error("center rejected %d events: %s", len(res["rejected"]), res["rejected"][:3])
        spool.ack(items[-1][0])
        self.stats.sent += len(items)
        self.stats.accepted += int(res.get("accepted", 0))
        self.stats.duplicates += int(res.get("duplicates", 0))
        self.stats.rejected += len(res.get("rejected", []))
        return len(items)


class CenterLink:
    """Background threads of an enrolled SVM: ship the spool, heartbeat, watch the config.

    `on_config(cfg)` is called with every new configuration version.

    While the center is down each loop keeps its own pace (shipping and the configuration poll
    back off up to `max_backoff`, the heartbeat keeps its period), so a down center gets a few
    requests a minute. The first request it answers again, whichever loop made it, wakes the
    others: spooled events go at once instead of at the end of the shipper's backoff.
    """

    def __init__(
        self,
        data_dir: str | Path | None,
        spool: Spool,
        on_config: Callable[[dict[str, Any]], None] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        heartbeat_every: float = 30.0,
        batch: int = 1000,
        min_backoff: float = 0.5,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.client = CenterClient(data_dir)
        self.spool = spool
        self.on_config = on_config
        self.status = status
        self.heartbeat_every = heartbeat_every
        self.batch = batch
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stop_event = threading.Event()
        self.config_version = 0
        self.connected = False
        self.ship_backoff = 0.0  # the shipper's current wait after a failure (0: none)
        self._ship_wake = threading.Event()  # set when the center answers after a failure
        self._config_wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target, name in (
            (self._ship_loop, "center-ship"),
            (self._heartbeat_loop, "center-heartbeat"),
            (self._config_loop, "center-config"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self.stop_event.set()
        self._ship_wake.set()
        self._config_wake.set()
        for t in self._threads:
            t.join(timeout=5)
        self.client.close()

    def _answered(self) -> None:
        """A request got an answer: if the center was down, loops in a backoff retry now."""
        if not self.connected:
            self.connected = True
            self._ship_wake.set()
            self._config_wake.set()

    def _backoff(self, wake: threading.Event, seconds: float) -> None:
        """Wait out a backoff; cut short by stop, or by the center answering another loop."""
        end = time.monotonic() + seconds
        while not self.stop_event.is_set() and not wake.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            wake.wait(min(left, 0.5))  # stop_event may be set alone (vmshield svm's shutdown)

    def _ship_loop(self) -> None:
        backoff = self.min_backoff
        while not self.stop_event.is_set():
            self._ship_wake.clear()  # only an answer to a later request may end the next wait
            try:
                n = self.client.ship_once(self.spool, self.batch)
                self._answered()
                backoff = self.min_backoff
                self.ship_backoff = 0.0
                if n < self.batch:
                    self.stop_event.wait(0.2)
            except (httpx.HTTPError, OSError) as exc:
                self.connected = False
                self.client.stats.errors += 1
                self.ship_backoff = backoff
                log.warning("shipping events failed (%s); retrying in %.1fs", exc, backoff)
                self._backoff(self._ship_wake, backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                st = self.status() if self.status else {}
                self.client.heartbeat(
                    db_versions=st.get("db_versions"),
                    health=st.get("health", "ok"),
                    detail=st.get("detail"),
                )
                self._answered()
            except (httpx.HTTPError, OSError) as exc:
                self.connected = False
                log.warning("heartbeat failed: %s", exc)
            self.stop_event.wait(self.heartbeat_every)

    def _config_loop(self) -> None:
        backoff = max(self.min_backoff, 1.0)
        while not self.stop_event.is_set():
            self._config_wake.clear()
            try:
                cfg = self.client.fetch_config(since=self.config_version, wait=25.0)
                self._answered()
                backoff = max(self.min_backoff, 1.0)
                if int(cfg["version"]) != self.config_version:
                    self.config_version = int(cfg["version"])
                    if self.on_config is not None:
                        self.on_config(cfg)
            except (httpx.HTTPError, OSError) as exc:
                self.connected = False
                log.warning("config fetch failed (%s); retrying in %.0fs", exc, backoff)
                self._backoff(self._config_wake, backoff)
                backoff = min(backoff * 2, self.max_backoff)
            except (KeyError, ValueError) as exc:  # answered, but not a configuration we can use
                log.error("center configuration not applied (%s); retrying in %.0fs", exc, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)


def wait_drained(spool: Spool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while len(spool) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(spool) == 0
