"""The center's own certificate authority, its HTTPS certificate, and SVM client certificates.

Files in the data directory (keys 0600): ca.pem/ca.key (the CA that signs SVM client certificates
and the server certificate), server.pem/server.key (HTTPS, unless the operator gives their own),
secret.key (Fernet key for connection credentials at rest).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: Any,
    days: int,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    """Every certificate we issue: valid from five minutes ago (clock skew) for `days`."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


@dataclass
class CenterPKI:
    data_dir: Path

    @property
    def ca_cert_path(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        return self.data_dir / "ca.key"

    @property
    def server_cert_path(self) -> Path:
        return self.data_dir / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.data_dir / "server.key"

    @property
    def secret_key_path(self) -> Path:
        return self.data_dir / "secret.key"

    def ensure(self, server_names: list[str] | None = None) -> None:
        """Create what is missing: CA, server certificate, secret key. Never overwrites."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.ca_cert_path.exists():
            self._make_ca()
        if not self.server_cert_path.exists():
            self._make_server_cert(server_names or [])
        if not self.secret_key_path.exists():
            _write_private(self.secret_key_path, Fernet.generate_key())

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vmshield"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"vmshield center CA {socket.gethostname()}"
                ),
            ]
        )
        cert = (
            _builder(name, name, key.public_key(), CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key_path, _key_pem(key))
        self.ca_cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def _make_server_cert(self, names: list[str]) -> None:
        ca, ca_key = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        hostnames = {"localhost", socket.gethostname(), *names}
        sans: list[x509.GeneralName] = []
        for n in sorted(hostnames):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmshield center")])
        cert = (
            _builder(subject, ca.subject, key.public_key(), LEAF_DAYS)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(self.server_key_path, _key_pem(key))
        # Chain: leaf then CA, so clients that pin the CA verify it.
        self.server_cert_path.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + ca.public_bytes(serialization.Encoding.PEM)
        )

    def ca_pem(self) -> bytes:
        return self.ca_cert_path.read_bytes()

    def ca_fingerprint(self) -> str:
        return fingerprint_pem(self.ca_pem())

    def fernet(self) -> Fernet:
        return Fernet(self.secret_key_path.read_bytes().strip())

    def sign_svm_csr(self, csr_pem: bytes, deployment_id: int) -> tuple[bytes, str, str]:
        """Sign an SVM's CSR (its key never leaves the SVM). Returns (pem, fingerprint, serial).

        The subject is ours, not the CSR's: the certificate names the deployment, whatever the
        requester asked for.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ValueError(f"csr: not a PEM certificate signing request ({exc})") from None
        if not csr.is_signature_valid:
            raise ValueError("csr: signature does not verify")
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            from cryptography.hazmat.primitives.asymmetric import rsa

            if not (isinstance(pub, rsa.RSAPublicKey) and pub.key_size >= 2048):
                raise ValueError("csr: key must be EC or RSA >= 2048 bits")
        ca, ca_key = self._load_ca()
        serial = x509.random_serial_number()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vmshield"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"svm-{deployment_id}"),
            ]
        )
        cert = (
            _builder(subject, ca.subject, pub, LEAF_DAYS, serial)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        return (
            cert.public_bytes(serialization.Encoding.PEM),
            fingerprint_der(der),
            format(serial, "x"),
        )


def make_key_and_csr(common_name: str) -> tuple[bytes, bytes]:
    """For the SVM side: a new EC key and a CSR for it (PEM, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    _write_private(path, data)
