"""TLS: ClientHello/ServerHello, SNI, JA3/JA3S against published values, JA4 spec example."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from nids_capgen import client_hello, server_hello

from vmshield.engines.net.app.tls import TlsState, ja3_string, ja4, md5_hex

# The JA3 README's example, computed independently by its authors:
# 769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0
# -> ada70206e40642a3e4461f35503241d5
JA3_CIPHERS = [47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4]


def test_ja3_published_value() -> None:
    rec = client_hello(
        "example.com",
        version=769,
        ciphers=JA3_CIPHERS,
        groups=[23, 24, 25],
        point_formats=[0],
        ext_order=[0, 10, 11],
    )
    t = TlsState()
    h = t.feed(rec, True)
    assert h is not None and h.sni == "example.com"
    assert ja3_string(h) == "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0"
    assert md5_hex(ja3_string(h)) == "ada70206e40642a3e4461f35503241d5"
    e = t.eve()
    assert e["sni"] == "example.com" and e["ja3"]["hash"] == "ada70206e40642a3e4461f35503241d5"
    assert e["version"] == "TLS 1.0"
    assert t.buffers()["tls.sni"] == b"example.com"


def test_grease_is_ignored() -> None:
    rec = client_hello(
        "example.com",
        version=769,
        ciphers=[0x0A0A, *JA3_CIPHERS],
        groups=[0x1A1A, 23, 24, 25],
        point_formats=[0],
        extensions=[(0x2A2A, b"")],
        ext_order=[0x2A2A, 0, 10, 11],
    )
    h = TlsState().feed(rec, True)
    assert h is not None
    assert md5_hex(ja3_string(h)) == "ada70206e40642a3e4461f35503241d5"


def test_ja4_spec_example() -> None:
    # The FoxIO JA4 README example: t13d1516h2_8daaf6152771_e5627efa2ab1.
    ciphers = [
        0x1301,
        0x1302,
        0x1303,
        0xC02B,
        0xC02F,
        0xC02C,
        0xC030,
        0xCCA9,
        0xCCA8,
        0xC013,
        0xC014,
        0x009C,
        0x009D,
        0x002F,
        0x0035,
    ]
    sig = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
    others = [
        0x0005,
        0x000A,
        0x000B,
        0x000D,
        0x0012,
        0x0015,
        0x0017,
        0x001B,
        0x0023,
        0x002B,
        0x002D,
        0x0033,
        0x4469,
        0xFF01,
    ]
    rec = client_hello(
        "www.example.com",
        ciphers=[0x3A3A, *ciphers],
        groups=[29, 23, 24],
        point_formats=[0],
        sig_algs=sig,
        alpn=[b"h2", b"http/1.1"],
        supported_versions=[0x3A3A, 0x0304, 0x0303],
        ext_order=[0x3A3A, 0, 16, *others],
    )
    h = TlsState().feed(rec, True)
    assert h is not None
    assert ja4(h) == "t13d1516h2_8daaf6152771_e5627efa2ab1"


def test_hello_split_over_segments_and_records_then_server_hello() -> None:
    rec = client_hello("split.example", ciphers=[0x1301, 0x1302], supported_versions=[0x0304])
    # Re-frame the handshake into two records, then feed a few bytes at a time.
    hs = rec[5:]
    two = b"\x16\x03\x01" + len(hs[:30]).to_bytes(2, "big") + hs[:30]
    two += b"\x16\x03\x01" + len(hs[30:]).to_bytes(2, "big") + hs[30:]
    t = TlsState()
    got = None
    for i in range(0, len(two), 7):
        got = t.feed(two[i : i + 7], True) or got
    assert got is not None and got.sni == "split.example"
    sh = server_hello(0x1301, [(43, b"\x03\x04")])
    s = t.feed(sh, False)
    assert s is not None and s.negotiated_version == 0x0304
    e = t.eve()
    assert e["version"] == "TLS 1.3" and "ja3s" in e
    assert e["ja3s"]["string"] == "771,4865,43"
    t.feed(b"\x14\x03\x03\x00\x01\x01", True)
    t.feed(b"\x17\x03\x03\x00\x02ab", False)
    assert t.encrypted


def test_not_tls() -> None:
    t = TlsState()
    assert t.feed(b"\x16\x09\x09\x00\x05hello", True) is None
    assert t.client.error


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_never_raises(data: bytes) -> None:
    t = TlsState()
    t.feed(b"\x16\x03\x01" + len(data).to_bytes(2, "big") + data, True)
    t.feed(data, False)
    t.eve()


def _cert_der(cn: str) -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subj = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subj)
        .issuer_name(subj)
        .public_key(key.public_key())
        .serial_number(0xABCDEF)
        .not_valid_before(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2027, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def _certificate_record(der: bytes) -> bytes:
    entry = len(der).to_bytes(3, "big") + der
    body = len(entry).to_bytes(3, "big") + entry
    hs = b"\x0b" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + len(hs).to_bytes(2, "big") + hs


def test_server_certificate_fields() -> None:
    import hashlib

    der = _cert_der("www.example.fr")
    t = TlsState()
    t.feed(client_hello("www.example.fr", ciphers=[0xC02F]), True)
    t.feed(server_hello(0xC02F, []) + _certificate_record(der)[:50], False)
    assert t.server.cert is None  # certificate split over segments
    t.feed(_certificate_record(der)[50:], False)
    e = t.eve()
    assert e["subject"] == "C=FR, CN=www.example.fr" and e["issuerdn"] == "C=FR, CN=www.example.fr"
    assert e["serial"] == "AB:CD:EF"
    assert e["notbefore"] == "2026-01-02T03:04:05" and e["notafter"] == "2027-01-02T03:04:05"
    assert e["fingerprint"] == ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())
    assert t.buffers()["tls.cert_subject"] == b"C=FR, CN=www.example.fr"


def test_malformed_certificate_keeps_the_fingerprint() -> None:
    t = TlsState()
    t.feed(server_hello(0xC02F, []) + _certificate_record(b"\x30\x03junk"), False)
    assert t.server.cert is not None and t.server.cert.error.startswith("certificate not parsed")
    assert "fingerprint" in t.eve() and "subject" not in t.eve()
