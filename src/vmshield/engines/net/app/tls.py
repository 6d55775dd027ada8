"""TLS handshake parser: ClientHello and ServerHello, SNI, version, JA3, JA3S and JA4.

Fed with reassembled stream data of one direction; handshake messages may span records and
records may span segments. Stops once the connection turns to encrypted data, bounded by
`max_handshake` bytes.

JA3 (github.com/salesforce/ja3): "version,ciphers,extensions,groups,point formats", decimal, GREASE
values removed, MD5. JA3S: "version,cipher,extensions". JA4 (FoxIO, JA4 TLS client): the
`t13d1516h2_<ciphers>_<extensions>` form.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, Final

GREASE: Final = frozenset((x << 8) | x for x in range(0x0A, 0x100, 0x10))
VERSION_NAMES: Final = {
    0x0300: "SSLv3",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
    0x0002: "SSLv2",
}
_JA4_VERSIONS: Final = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
CT_CCS: Final = 20
CT_ALERT: Final = 21
CT_HANDSHAKE: Final = 22
CT_APPDATA: Final = 23
HS_CLIENT_HELLO: Final = 1
HS_SERVER_HELLO: Final = 2
EXT_SNI: Final = 0
EXT_GROUPS: Final = 10
EXT_POINT_FORMATS: Final = 11
EXT_SIG_ALGS: Final = 13
EXT_ALPN: Final = 16
EXT_VERSIONS: Final = 43


class TlsError(ValueError):
    pass


@dataclass(slots=True, init=False)
class Hello:
    """A parsed ClientHello or ServerHello."""

    kind: int  # HS_CLIENT_HELLO or HS_SERVER_HELLO
    version: int  # legacy version field
    ciphers: list[int] = field(default_factory=list)
    extensions: list[int] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    sig_algs: list[int] = field(default_factory=list)
    alpn: list[bytes] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # supported_versions
    sni: str = ""
    session_id: bytes = b""
    # (JA3 or JA3S string, its MD5, JA4 or ""): made once, see `fingerprints`.
    _fingerprints: tuple[str, str, str] | None = field(default=None, repr=False, compare=False)

    def __init__(
        self,
        kind: int,
        version: int,
        ciphers: list[int] | None = None,
        extensions: list[int] | None = None,
        groups: list[int] | None = None,
        point_formats: list[int] | None = None,
        sig_algs: list[int] | None = None,
        alpn: list[bytes] | None = None,
        versions: list[int] | None = None,
        sni: str = "",
        session_id: bytes = b"",
    ) -> None:
        # Written out for the compiled build: see Packet.__init__.
        self.kind = kind
        self.version = version
        self.ciphers = [] if ciphers is None else ciphers
        self.extensions = [] if extensions is None else extensions
        self.groups = [] if groups is None else groups
        self.point_formats = [] if point_formats is None else point_formats
        self.sig_algs = [] if sig_algs is None else sig_algs
        self.alpn = [] if alpn is None else alpn
        self.versions = [] if versions is None else versions
        self.sni = sni
        self.session_id = session_id
        self._fingerprints = None

    def fingerprints(self) -> tuple[str, str, str]:
        """(JA3 string, its MD5, JA4) of a ClientHello, (JA3S string, its MD5, "") of a
        ServerHello. Computed on first use, once the hello is parsed: the rule buffers (built
        again at each handshake step) and the EVE record all need them."""
        fp = self._fingerprints
        if fp is None:
            if self.kind == HS_CLIENT_HELLO:
                s = ja3_string(self)
                fp = (s, md5_hex(s), ja4(self))
            else:
                s = ja3s_string(self)
                fp = (s, md5_hex(s), "")
            self._fingerprints = fp
        return fp

    @property
    def negotiated_version(self) -> int:
        vs = [v for v in self.versions if v not in GREASE]
        return max(vs) if vs else self.version


def parse_hello(body: bytes, kind: int) -> Hello:
    """Parse the body of a ClientHello (kind 1) or ServerHello (kind 2) handshake message."""
    try:
        return _parse_hello(body, kind)
    except (struct.error, IndexError) as exc:
        raise TlsError(f"malformed hello: {exc}") from None


def _parse_hello(b: bytes, kind: int) -> Hello:
    if len(b) < 38:
        raise TlsError("hello shorter than version and random")
    h = Hello(kind, struct.unpack_from("!H", b, 0)[0])
    i = 34
    sid_len = b[i]
    h.session_id = b[i + 1 : i + 1 + sid_len]
    i += 1 + sid_len
    if kind == HS_CLIENT_HELLO:
        (clen,) = struct.unpack_from("!H", b, i)
        i += 2
        if clen % 2 or i + clen > len(b):
            raise TlsError("bad cipher suite list length")
        h.ciphers = list(struct.unpack_from(f"!{clen // 2}H", b, i))
        i += clen
        comp_len = b[i]
        i += 1 + comp_len
    else:
        h.ciphers = [struct.unpack_from("!H", b, i)[0]]
        i += 3  # cipher + compression method
    if i + 2 > len(b):
        return h  # no extensions
    (elen,) = struct.unpack_from("!H", b, i)
    i += 2
    end = min(len(b), i + elen)
    while i + 4 <= end:
        etype, ln = struct.unpack_from("!HH", b, i)
        i += 4
        ed = b[i : i + ln]
        if len(ed) < ln:
            raise TlsError(f"extension {etype} runs past the hello")
        i += ln
        h.extensions.append(etype)
        if etype == EXT_SNI and kind == HS_CLIENT_HELLO and len(ed) >= 5:
            j = 2
            while j + 3 <= len(ed):
                nt, nl = ed[j], struct.unpack_from("!H", ed, j + 1)[0]
                if nt == 0:
                    h.sni = ed[j + 3 : j + 3 + nl].decode("ascii", "replace")
                    break
                j += 3 + nl
        elif etype == EXT_GROUPS and len(ed) >= 2:
            n = struct.unpack_from("!H", ed, 0)[0] // 2
            h.groups = list(struct.unpack_from(f"!{min(n, (len(ed) - 2) // 2)}H", ed, 2))
        elif etype == EXT_POINT_FORMATS and len(ed) >= 1:
            h.point_formats = list(ed[1 : 1 + ed[0]])
        elif etype == EXT_SIG_ALGS and len(ed) >= 2:
            n = struct.unpack_from("!H", ed, 0)[0] // 2
            h.sig_algs = list(struct.unpack_from(f"!{min(n, (len(ed) - 2) // 2)}H", ed, 2))
        elif etype == EXT_ALPN and len(ed) >= 2:
            j = 2
            while j < len(ed):
                ln2 = ed[j]
                h.alpn.append(ed[j + 1 : j + 1 + ln2])
                j += 1 + ln2
        elif etype == EXT_VERSIONS:
            if kind == HS_CLIENT_HELLO and len(ed) >= 1:
                h.versions = [
                    struct.unpack_from("!H", ed, 1 + k)[0]
                    for k in range(0, ed[0] - 1, 2)
                    if 1 + k + 2 <= len(ed)
                ]
            elif len(ed) >= 2:
                h.versions = [struct.unpack_from("!H", ed, 0)[0]]
    return h


def _dash(vals: list[int]) -> str:
    return "-".join(str(v) for v in vals if v not in GREASE)


def ja3_string(h: Hello) -> str:
    return ",".join(
        (
            str(h.version),
            _dash(h.ciphers),
            _dash(h.extensions),
            _dash(h.groups),
            _dash(h.point_formats),
        )
    )


def ja3s_string(h: Hello) -> str:
    return ",".join((str(h.version), _dash(h.ciphers), _dash(h.extensions)))


def md5_hex(s: str) -> str:
    return hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()


def ja4(h: Hello, transport: str = "t") -> str:
    """JA4 fingerprint of a ClientHello (JA4 TLS client, FoxIO spec)."""
    ciphers = [c for c in h.ciphers if c not in GREASE]
    exts = [e for e in h.extensions if e not in GREASE]
    ver = _JA4_VERSIONS.get(h.negotiated_version, "00")
    sni = "d" if h.sni else "i"
    alpn = "00"
    if h.alpn and h.alpn[0]:
        a = h.alpn[0]
        first, last = chr(a[0]), chr(a[-1])
        if not (first.isalnum() and last.isalnum() and a[0] < 128 and a[-1] < 128):
            first, last = f"{a[0]:02x}"[0], f"{a[-1]:02x}"[-1]
        alpn = first + last
    # Zero-padded numbers by slicing, not format specs: this runs for every ClientHello, and
    # the compiled build sends a format spec through str.format.
    counts = str(100 + min(len(ciphers), 99))[1:] + str(100 + min(len(exts), 99))[1:]
    a_part = transport + ver + sni + counts + alpn
    if ciphers:
        b_part = _sha12(",".join([_hex4(c) for c in sorted(ciphers)]))
    else:
        b_part = "000000000000"
    ext_sorted = sorted(e for e in exts if e not in (EXT_SNI, EXT_ALPN))
    ext_s = ",".join([_hex4(e) for e in ext_sorted])
    sig = [s for s in h.sig_algs if s not in GREASE]
    if sig:
        ext_s += "_" + ",".join([_hex4(s) for s in sig])
    c_part = _sha12(ext_s) if ext_sorted else "000000000000"
    return f"{a_part}_{b_part}_{c_part}"


def _hex4(v: int) -> str:
    """`v` (0..65535) as four lower-case hex digits."""
    return hex(v | 0x10000)[3:]


def _sha12(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:12]


HS_CERTIFICATE: Final = 11
MAX_CERT: Final = 32 * 1024  # the first certificate of the chain; larger ones are not parsed


@dataclass(slots=True)
class CertInfo:
    """The server's (first) certificate, in Suricata's EVE formats."""

    subject: str = ""
    issuerdn: str = ""
    serial: str = ""
    fingerprint: str = ""  # SHA-1, lower-case hex pairs joined by ":"
    notbefore: str = ""
    notafter: str = ""
    error: str = ""


def parse_certificate(der: bytes) -> CertInfo:
    """Subject, issuer, serial, fingerprint and validity of a DER certificate."""
    info = CertInfo(fingerprint=":".join(f"{b:02x}" for b in hashlib.sha1(der).digest()))
    try:
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        info.subject = _dn(cert.subject)
        info.issuerdn = _dn(cert.issuer)
        sn = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
        info.serial = ":".join(f"{b:02X}" for b in sn)
        info.notbefore = cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%S")
        info.notafter = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S")
    except Exception as exc:  # noqa: BLE001 - any malformed DER: keep the fingerprint, say why
        info.error = f"certificate not parsed: {type(exc).__name__}"
    return info


def _dn(name: Any) -> str:
    # Suricata's form: attributes in certificate order, "C=US, O=Example, CN=example.com".
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            parts.append(f"{attr.rfc4514_attribute_name}={attr.value}")
    return ", ".join(parts)


class TlsDir:
    """Record and handshake reassembly for one direction."""

    __slots__ = ("buf", "hs", "hello", "cert", "encrypted", "error", "max_handshake", "seen")

    def __init__(self, max_handshake: int) -> None:
        self.buf = bytearray()
        self.hs = bytearray()  # handshake-protocol bytes across records
        self.hello: Hello | None = None
        self.cert: CertInfo | None = None  # server side, TLS <= 1.2 (1.3 encrypts it)
        self.encrypted = False
        self.error = ""
        self.max_handshake = max_handshake
        self.seen = 0

    def feed(self, data: bytes, want: int) -> Hello | None:
        """Returns the hello of type `want` once parsed (only once)."""
        if self.encrypted or self.error:
            return None
        self.seen += len(data)
        self.buf += data
        found: Hello | None = None
        while len(self.buf) >= 5:
            ct = self.buf[0]
            ln = int.from_bytes(self.buf[3:5], "big")
            if ct not in (CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA) or self.buf[1] != 3:
                self.error = f"not a TLS record (content type {ct})"
                self.buf.clear()
                return None
            if ln > 18432:
                self.error = f"TLS record length {ln} over the maximum"
                self.buf.clear()
                return None
            if len(self.buf) < 5 + ln:
                break
            rec = bytes(self.buf[5 : 5 + ln])
            del self.buf[: 5 + ln]
            if ct != CT_HANDSHAKE:
                if ct in (CT_CCS, CT_APPDATA):
                    self.encrypted = True
                    self.buf.clear()
                    self.hs.clear()
                    return found
                continue
            if self.hello is not None and (want != HS_SERVER_HELLO or self.cert is not None):
                continue  # nothing more wanted from the handshake: only watch for encryption
            self.hs += rec
            if len(self.hs) > self.max_handshake:
                self.error = "handshake larger than the limit"
                self.hs.clear()
                return found
            while len(self.hs) >= 4:
                mtype = self.hs[0]
                mlen = int.from_bytes(self.hs[1:4], "big")
                if len(self.hs) < 4 + mlen:
                    break
                body = bytes(self.hs[4 : 4 + mlen])
                del self.hs[: 4 + mlen]
                if mtype == want and self.hello is None:
                    try:
                        self.hello = parse_hello(body, want)
                    except TlsError as exc:
                        self.error = str(exc)
                        return None
                    found = self.hello
                elif mtype == HS_CERTIFICATE and self.hello is not None and self.cert is None:
                    self.cert = _first_certificate(body)
                    self.hs.clear()
                    break
        return found


def _first_certificate(body: bytes) -> CertInfo:
    # Certificate: 3-byte list length, then (3-byte length, DER) entries (TLS 1.2 layout).
    if len(body) < 6:
        return CertInfo(error="certificate message too short")
    ln = int.from_bytes(body[3:6], "big")
    der = body[6 : 6 + ln]
    if len(der) < ln or ln == 0:
        return CertInfo(error="certificate truncated")
    if ln > MAX_CERT:
        return CertInfo(error=f"certificate of {ln} bytes not parsed")
    return parse_certificate(der)


class TlsState:
    """Both directions of a TLS connection."""

    __slots__ = ("client", "server", "logged")

    def __init__(self, max_handshake: int = 64 * 1024) -> None:
        self.client = TlsDir(max_handshake)
        self.server = TlsDir(max_handshake)
        self.logged = False

    def feed(self, data: bytes, toserver: bool) -> Hello | None:
        if toserver:
            return self.client.feed(data, HS_CLIENT_HELLO)
        return self.server.feed(data, HS_SERVER_HELLO)

    @property
    def encrypted(self) -> bool:
        return self.client.encrypted and self.server.encrypted

    def buffers(self) -> dict[str, bytes]:
        ch = self.client.hello
        sh = self.server.hello
        b: dict[str, bytes] = {}
        if ch:
            b["tls.sni"] = ch.sni.encode()
            js, js_md5, ja4_hash = ch.fingerprints()
            b["ja3.string"] = js.encode()
            b["ja3.hash"] = js_md5.encode()
            b["ja4.hash"] = ja4_hash.encode()
        if sh:
            jss, jss_md5, _ = sh.fingerprints()
            b["ja3s.string"] = jss.encode()
            b["ja3s.hash"] = jss_md5.encode()
            b["tls.version"] = VERSION_NAMES.get(sh.negotiated_version, "").encode()
        cert = self.server.cert
        if cert is not None and not cert.error:
            b["tls.cert_subject"] = cert.subject.encode()
            b["tls.cert_issuer"] = cert.issuerdn.encode()
            b["tls.cert_serial"] = cert.serial.encode()
            b["tls.cert_fingerprint"] = cert.fingerprint.encode()
        return b

    def eve(self) -> dict[str, Any]:
        """Suricata's EVE `tls` object."""
        out: dict[str, Any] = {}
        ch = self.client.hello
        sh = self.server.hello
        if ch and ch.sni:
            out["sni"] = ch.sni
        hello = sh or ch
        if hello:
            v = hello.negotiated_version
            out["version"] = VERSION_NAMES.get(v, f"0x{v:04x}")
        if ch:
            js, js_md5, ja4_hash = ch.fingerprints()
            out["ja3"] = {"hash": js_md5, "string": js}
            out["ja4"] = ja4_hash
            if ch.alpn:
                out["client_alpns"] = [a.decode("ascii", "replace") for a in ch.alpn]
        if sh:
            jss, jss_md5, _ = sh.fingerprints()
            out["ja3s"] = {"hash": jss_md5, "string": jss}
        cert = self.server.cert
        if cert is not None:
            if cert.subject:
                out["subject"] = cert.subject
                out["issuerdn"] = cert.issuerdn
                out["serial"] = cert.serial
                out["notbefore"] = cert.notbefore
                out["notafter"] = cert.notafter
            if cert.fingerprint:
                out["fingerprint"] = cert.fingerprint
        return out
