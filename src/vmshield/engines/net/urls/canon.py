"""Safe Browsing URL canonicalization and lookup expressions.

Implements developers.google.com/safe-browsing/v4/urls-hashing exactly: remove tab/CR/LF, drop
the fragment, unescape repeatedly, canonicalize the host (dots, IPv4 in any legal encoding,
bracketed IPv6, lower case) and the path (`/./`, `/../`, `//`), then escape every byte <= 0x20,
>= 0x7f, `#` and `%`. Lookup expressions are up to 5 host suffixes times up to 6 path prefixes.

Internally a URL is a `str` whose code points are bytes (latin-1), so escaping works on the bytes
a browser would send; a `str` argument is UTF-8 encoded first. Pure functions, no I/O; the host
caches are bounded dicts that are cleared when full.
"""

from __future__ import annotations

import ipaddress
import re

MAX_URL_LENGTH = 16384  # longer input is cut: no URL a browser sends is longer, and it bounds work
MAX_PATH_PREFIXES = 4  # "/", and up to three more directory prefixes
MAX_HOST_SUFFIXES = 5  # the exact host plus up to four suffixes of at most five components

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_NEEDS_ESCAPE = re.compile(r"[\x00-\x20\x7f-\xff#%]")
_ESCAPE_TABLE = {i: f"%{i:02X}" for i in [*range(0, 33), *range(127, 256), ord("#"), ord("%")]}
_IPV4_PART = re.compile(r"^(?:0[xX][0-9A-Fa-f]+|0[0-7]*|[1-9][0-9]*)$")
_POSSIBLE_IP = re.compile(r"^(?:0[xX][0-9A-Fa-f]+|[0-9.])+$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CACHE_MAX = 65536
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


class UrlError(ValueError):
    """A URL that has no host after canonicalization."""


def _pct_sub(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 16))


def unescape_fully(s: str) -> str:
    """Percent-unescape until nothing changes (each pass shortens the string, so it ends)."""
    while "%" in s:
        t = _PCT.sub(_pct_sub, s)
        if t == s:
            break
        s = t
    return s


def escape(s: str) -> str:
    if _NEEDS_ESCAPE.search(s) is None:
        return s
    return s.translate(_ESCAPE_TABLE)


def to_latin1(url: str | bytes) -> str:
    """The internal form: one code point per byte (a str is UTF-8 encoded first)."""
    if isinstance(url, bytes | bytearray | memoryview):
        return bytes(url[:MAX_URL_LENGTH]).decode("latin-1")
    if url.isascii():
        return url[:MAX_URL_LENGTH]
    return url.encode("utf-8", "surrogateescape")[:MAX_URL_LENGTH].decode("latin-1")


def _ipv4(host: str) -> str | None:
    """Normalise any legal IPv4 encoding (octal, hex, 1-4 parts) to dotted decimal."""
    if not host or _POSSIBLE_IP.match(host) is None:
        return None
    parts = host.split(".")
    if len(parts) > 4:
        return None
    out: list[str] = []
    for i, part in enumerate(parts):
        if _IPV4_PART.match(part) is None:
            return None
        if part[:2] in ("0x", "0X"):
            value = int(part[2:], 16)
        elif part.startswith("0") and len(part) > 1:
            value = int(part[1:], 8)
        else:
            value = int(part)
        if i < len(parts) - 1:
            if value > 255:
                return None
            out.append(str(value))
        else:
            nbytes = 5 - len(parts)
            if value >= 256**nbytes:
                return None
            out.extend(str(b) for b in value.to_bytes(nbytes, "big"))
    return ".".join(out)


def _ipv6(host: str) -> str | None:
    inner = host[1:-1]
    try:
        addr = ipaddress.IPv6Address(inner)
    except ValueError:
        return None
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    if addr in _NAT64:
        return str(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return f"[{addr.compressed}]"


def _idna(host: str) -> str:
    """Non-ASCII host bytes that are valid UTF-8 become Punycode; anything else stays bytes."""
    try:
        return host.encode("latin-1").decode("utf-8").encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return host


def _escape_host(host: str) -> str:
    # URL delimiters that unescaping put into a host (brackets outside a valid IPv6 literal, ":",
    # "@", "/", "?") are escaped again, so that the canonical form parses back to the same host;
    # the specification leaves such invalid hosts open.
    host = escape(host)
    if _HOST_DELIMS.search(host):
        host = host.translate(_HOST_DELIMS_TABLE)
    return host


# Lower-case LDH labels (and "_"), the last not starting with a digit: "0xff" and "1.0x1f" are
# IPv4 addresses in hex, not names.
_PLAIN_HOST = re.compile(r"(?:[a-z0-9_\-]+\.)*[a-z_\-][a-z0-9_\-]*").fullmatch
_HOST_DELIMS = re.compile(r"[\[\]:@/?]")
_HOST_DELIMS_TABLE = {ord(c): f"%{ord(c):02X}" for c in "[]:@/?"}
_host_cache: dict[str, str] = {}


def canonical_host(raw: str) -> str:
    """Canonical form of a host as it appears in a URL (latin-1 str, may be escaped)."""
    cached = _host_cache.get(raw)
    if cached is not None:
        return cached
    if _PLAIN_HOST(raw) is not None:
        result = raw  # already canonical: lower-case name, nothing to unescape or escape
    else:
        result = _canonical_host(raw)
    if len(_host_cache) >= _CACHE_MAX:
        _host_cache.clear()
    _host_cache[raw] = result
    return result


def _canonical_host(raw: str) -> str:
    host = unescape_fully(raw)
    if ".." in host or host.startswith(".") or host.endswith("."):
        host = ".".join(p for p in host.split(".") if p)
    # Lower-case ASCII only: str.lower() would change the meaning of latin-1 coded bytes.
    host = host.lower() if host.isascii() else _idna(host).translate(_ASCII_LOWER)
    if host.startswith("[") and host.endswith("]"):
        v6 = _ipv6(host)
        result = v6 if v6 is not None else _escape_host(host)
    else:
        v4 = _ipv4(host)
        result = v4 if v4 is not None else _escape_host(host)
    return result


def canonical_path(raw: str) -> str:
    path = unescape_fully(raw)
    if "/." in path or "//" in path or not path.startswith("/"):
        trailing = path.endswith(("/", "/.", "/..")) or path in (".", "..")
        segs: list[str] = []
        for seg in path.split("/"):
            if seg == "" or seg == ".":
                continue
            if seg == "..":
                if segs:
                    segs.pop()
                continue
            segs.append(seg)
        path = "/" + "/".join(segs)
        if trailing and segs:
            path += "/"
    return escape(path)


# Most URLs on the wire are already canonical but for the host's case: this matches those, and
# anything it does not match takes the full algorithm below.
_SIMPLE = re.compile(
    r"(https?)://([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)(?::[0-9]{1,5})?"
    r"(/[A-Za-z0-9/._~!$&'()*+,;=:@\-]*)?(?:\?([\x21-\x22\x24\x26-\x7e]*))?"
)


def split_url(url: str | bytes) -> tuple[str, str, str, str | None]:
    """(scheme, canonical host, canonical path, canonical query or None)."""
    if type(url) is str and len(url) <= MAX_URL_LENGTH:  # the full algorithm cuts longer ones
        m = _SIMPLE.fullmatch(url)
        if m is not None:
            scheme, host, path, query = m.groups()
            if path is None:
                path = "/"
            elif "/." in path or "//" in path:
                path = canonical_path(path)
            return scheme, canonical_host(host), path, query
    s = to_latin1(url).strip(" \t\r\n\f\v")
    if "\t" in s or "\r" in s or "\n" in s:
        s = s.replace("\t", "").replace("\r", "").replace("\n", "")
    hash_at = s.find("#")
    if hash_at >= 0:
        s = s[:hash_at]
    m = _SCHEME.match(s)
    if m is not None:
        scheme = m.group(1).lower()
        rest = s[m.end() :]
    else:
        scheme = "http"
        rest = s
    # The authority ends at the first "/" or "?"; only then is anything unescaped.
    end = len(rest)
    for sep in ("/", "?"):
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = authority.rpartition("@")[2]
    close = authority.find("]") if authority.startswith("[") else -1
    if close > 0:
        authority = authority[: close + 1]
    elif ":" in authority:
        authority = authority.partition(":")[0]
    host = canonical_host(authority)
    if not host:
        raise UrlError(f"no host in URL {url!r:.200}")
    q = tail.find("?")
    if q >= 0:
        raw_path, query = tail[:q], escape(unescape_fully(tail[q + 1 :]))
    else:
        raw_path, query = tail, None
    path = canonical_path(raw_path) if raw_path else "/"
    return scheme, host, path, query


def canonicalize(url: str | bytes) -> str:
    """The canonical URL, as `vmshield url canon` prints it."""
    scheme, host, path, query = split_url(url)
    return f"{scheme}://{host}{path}" if query is None else f"{scheme}://{host}{path}?{query}"


def _is_ip(host: str) -> bool:
    # A canonical IPv4 address ends in a digit; most names do not.
    return host.startswith("[") or (host[-1:].isdigit() and _ipv4(host) == host)


_suffix_cache: dict[str, tuple[str, ...]] = {}


def host_suffixes(host: str) -> tuple[str, ...]:
    """The exact host, then up to four suffixes built from its last five components."""
    cached = _suffix_cache.get(host)
    if cached is not None:
        return cached
    if _is_ip(host):
        result: tuple[str, ...] = (host,)
    else:
        parts = host.split(".")
        n = len(parts)
        result = (host, *(".".join(parts[i:]) for i in range(max(1, n - MAX_HOST_SUFFIXES), n - 1)))
    if len(_suffix_cache) >= _CACHE_MAX:
        _suffix_cache.clear()
    _suffix_cache[host] = result
    return result


def path_prefixes(path: str, query: str | None) -> list[str]:
    """Exact path with query, exact path, then "/" and up to three directory prefixes."""
    out: list[str] = []
    if query is not None:
        out.append(f"{path}?{query}")
    out.append(path)
    if path != "/":
        out.append("/")
        start = 1
        for _ in range(MAX_PATH_PREFIXES - 1):
            i = path.find("/", start)
            if i < 0:
                break
            prefix = path[: i + 1]
            if prefix != path:
                out.append(prefix)
            start = i + 1
    return out


def url_expressions(url: str | bytes) -> list[str]:
    """Every host-suffix/path-prefix expression of a URL, in the order Google lists them."""
    _, host, path, query = split_url(url)
    paths = path_prefixes(path, query)
    return [h + p for h in host_suffixes(host) for p in paths]


def host_expressions(host: str | bytes) -> list[str]:
    """Expressions for a bare host name (DNS query, TLS SNI): every suffix with path "/"."""
    return [h + "/" for h in host_suffixes(canonical_host(to_latin1(host).strip().rstrip(".")))]
