"""The URL database: SHA-256 full hashes of lookup expressions, with category bits.

One file, memory-mapped at load, nothing parsed into Python objects:

    header   96 bytes  "<8sHBBBB2xIQQQQQ32s4x": magic, version, index bits, host index bits,
                       chain filter bits, host filter bits, metadata length, entries, trusted
                       entries, host keys, chain keys, build time, SHA-256 of everything after
                       the header
    index    (2**bits + 1) little-endian u32: first entry whose prefix >> (32 - bits) is >= i
    prefixes entries x little-endian u32: the first 4 bytes of each full hash (big-endian value),
             sorted
    hashes   entries x 32 bytes, in the same order
    cats     entries x little-endian u16: category bits (`CATEGORIES`; 0x80 = trusted)
    hostidx  (2**host index bits + 1) little-endian u32, as index, over the host keys
    hostkeys host keys x little-endian u32, sorted: 4-byte SHA-256 prefixes of the host part of
             every expression. A host none of whose suffixes is here has no entry at all, so the
             path expressions of its URLs are never hashed (the answer is cached per host).
    chain    2**chain filter bits bits: a one-hash Bloom filter (bit crc32(key) & mask, bit i
             at byte i >> 3, bit i & 7) over every entry host and its suffixes of 2 to 5 labels
    hosts    2**host filter bits bits: the same over the entry hosts alone, bit crc32(key) >>
             (32 - host filter bits)
    metadata JSON (sources, counts per category)

A lookup takes the 4-byte prefix, reads the index bucket (about one entry per bucket), compares
prefixes, then the full hash. Trusted entries win over every listed category.

A host never seen before is answered without SHA-256 when its name is plain (letters, digits,
"-", "_", the last label not numeric): its suffixes are tried shortest first (2 labels, ..., 5
labels, the host itself) against the chain filter with crc32, and the first one absent ends the
search, because every suffix of an entry host is in the chain. A suffix in both filters is
confirmed against the host keys (SHA-256) before its path expressions are hashed.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import struct
import sys
import time
import zlib
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshield.engines.net.urls.canon import (
    MAX_HOST_SUFFIXES,
    MAX_URL_LENGTH,
    UrlError,
    canonical_host,
    host_suffixes,
    path_prefixes,
    split_url,
    to_latin1,
)

MAGIC = b"VMSURLDB"
# 1: no crc32 filters (read by vmshield before the new-host fast path); 2: one category byte
# (threat categories only); 3: two bytes, with content categories.
VERSION = 3
_HEADER = struct.Struct("<8sHBBBB2xIQQQQQ32s4x")
HEADER_SIZE = _HEADER.size

# The URL categories: the one vocabulary of vmshield (the center's policies use it). The bits
# are part of the file format (VERSION). Threat categories are what the feeds report (plain
# lists: malicious, URLhaus: malware, PhishTank and OpenPhish: phishing) or what `--category`
# says; content categories come from category lists users have (UT1 / Toulouse blacklists: one
# domain per line per category, built in with `vmshield url build --list adult:FILE`).
CATEGORIES: dict[str, int] = {
    # threat categories: the low byte
    "malicious": 0x01,
    "phishing": 0x02,
    "adware": 0x04,
    "malware": 0x08,
    "unwanted": 0x10,
    "riskware": 0x20,
    "suspicious": 0x40,
    # 0x80: TRUSTED
    # content categories: the high byte
    "adult": 0x100,
    "gambling": 0x200,
    "social": 0x400,
    "games": 0x800,
    "dating": 0x1000,
    "drugs": 0x2000,
    # 0x4000, 0x8000: free
}
THREAT_CATEGORIES = tuple(name for name, bit in CATEGORIES.items() if bit < 0x80)
CONTENT_CATEGORIES = tuple(name for name, bit in CATEGORIES.items() if bit > 0x80)
TRUSTED = 0x80
_ENTRY_BYTES = 4 + 32 + 2  # prefix, full hash, category bits
_MEMO_MAX = 65536
# A plain host name: labels of letters, digits, "-" and "_", the last one not starting with a
# digit (so no IPv4 form, "0x1f" included). Its canonical form is its ASCII lower case: nothing to
# unescape, escape, or normalise. Anything else takes the full algorithm.
_NAME = r"((?:[A-Za-z0-9_\-]+\.)*[A-Za-z_\-][A-Za-z0-9_\-]*)"
_PLAIN_URL = re.compile(rf"https?://{_NAME}(?::[0-9]{{1,5}})?(?:[/?#]|\Z)").match
_PLAIN_AUTHORITY = re.compile(rf"{_NAME}(?::[0-9]{{1,5}})?").fullmatch
_PLAIN_HOST = re.compile(_NAME.replace("A-Z", "")).fullmatch  # canonical: lower case only
# The same in lower case, group 2 the last two labels: the first key of the chain walk, and for
# most hosts never seen before the only one (matching it is cheaper than splitting the host).
_L, _LAST = r"[a-z0-9_\-]+", r"[a-z_\-][a-z0-9_\-]*"
_FAST_URL = re.compile(
    rf"https?://((?:{_L}\.)*({_L}\.{_LAST}))(?::[0-9]{{1,5}})?(?:[/?#]|\Z)"
).match
_FAST_NAME = re.compile(rf"((?:{_L}\.)*({_L}\.{_LAST}))\.?").fullmatch
_FAST_AUTHORITY_BYTES = re.compile(
    rf"((?:{_L}\.)*({_L}\.{_LAST}))(?::[0-9]{{1,5}})?".encode()
).fullmatch
_crc32 = zlib.crc32
FILTER_BITS_PER_KEY = 32  # about 2-3 % false positives per probe with one hash
MAX_FILTER_BITS = 26  # 8 MB: keeps 1 M entries within 64 MB whatever the hosts
_MAX_PLAIN_NAME = 1024  # longer names take the full algorithm (it cuts URLs at MAX_URL_LENGTH)
MAX_ENTRIES = 1 << 28  # 10 GB of hashes: anything larger is a corrupt header, not a database


class UrlDatabaseError(Exception):
    """The database file is missing, truncated, corrupt or of another version."""


def category_names(bits: int) -> list[str]:
    return [name for name, bit in CATEGORIES.items() if bits & bit]


def category_bits(name: str) -> int:
    try:
        return CATEGORIES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown URL category {name!r} (known: {', '.join(CATEGORIES)})"
        ) from None


_CATEGORY_TUPLES: dict[int, tuple[str, ...]] = {}  # bits -> names (at most 2**16 entries)


def _category_tuple(bits: int) -> tuple[str, ...]:
    names = _CATEGORY_TUPLES.get(bits)
    if names is None:
        names = _CATEGORY_TUPLES[bits] = tuple(category_names(bits))
    return names


def full_hash(expression: str) -> bytes:
    return hashlib.sha256(expression.encode("latin-1")).digest()


@dataclass(slots=True, frozen=True)
class UrlVerdict:
    """A listed (or trusted) URL or host, and why."""

    target: str  # the URL or host that was checked
    expression: str  # the lookup expression that matched
    categories: tuple[str, ...]
    trusted: bool = False

    @property
    def listed(self) -> bool:
        return not self.trusted and bool(self.categories)


class UrlDatabase:
    """A loaded, read-only database. `check_url` / `check_host` answer None when not listed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise UrlDatabaseError(
                f"{self.path}: cannot open URL database: {exc.strerror}"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                if size >= 10 and os.pread(fd, 8, 0) == MAGIC:
                    self._check_version(struct.unpack("<H", os.pread(fd, 2, 8))[0])
                raise UrlDatabaseError(
                    f"{self.path}: truncated URL database ({size} bytes, header is {HEADER_SIZE})"
                )
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        try:
            self._open_body(size)
        except BaseException:
            self._mm.close()
            raise

    def _check_version(self, version: int) -> None:
        if version != VERSION:
            hint = " (rebuild it with `vmshield url build`)" if version < VERSION else ""
            raise UrlDatabaseError(
                f"{self.path}: URL database format version {version}, this vmshield reads "
                f"{VERSION}{hint}"
            )

    def _open_body(self, size: int) -> None:
        magic, version = self._mm[:8], int.from_bytes(self._mm[8:10], "little")
        if magic != MAGIC:
            raise UrlDatabaseError(f"{self.path}: not a vmshield URL database (bad magic)")
        self._check_version(version)
        (
            _,
            _,
            bits,
            hbits,
            cbits,
            fbits,
            meta_len,
            n,
            n_trusted,
            n_hosts,
            n_chain,
            built,
            digest,
        ) = _HEADER.unpack_from(self._mm, 0)
        if (
            not 1 <= bits <= 24
            or not 1 <= hbits <= 24
            or not 3 <= cbits <= MAX_FILTER_BITS
            or not 3 <= fbits <= MAX_FILTER_BITS
            or n > MAX_ENTRIES
            or n_hosts > n
            or n_chain > 5 * n
        ):
            raise UrlDatabaseError(f"{self.path}: corrupt URL database header")
        nidx = (1 << bits) + 1
        nhidx = (1 << hbits) + 1
        expected = (
            HEADER_SIZE
            + 4 * nidx
            + _ENTRY_BYTES * n
            + 4 * nhidx
            + 4 * n_hosts
            + (1 << cbits) // 8
            + (1 << fbits) // 8
            + meta_len
        )
        if size != expected:
            raise UrlDatabaseError(
                f"{self.path}: truncated or corrupt URL database: header announces {expected} "
                f"bytes, file has {size}"
            )
        # Every check before any view of the mapping is kept: a refused file leaves none behind,
        # so the mapping closes at once.
        with memoryview(self._mm) as whole:
            checksum_ok = hashlib.sha256(whole[HEADER_SIZE:]).digest() == digest
        if not checksum_ok:
            raise UrlDatabaseError(f"{self.path}: corrupt URL database (checksum mismatch)")
        idx_at = HEADER_SIZE
        hidx_at = idx_at + 4 * nidx + _ENTRY_BYTES * n
        meta_at = size - meta_len
        cats_end = hidx_at - _ENTRY_BYTES * n
        last_index = int.from_bytes(self._mm[cats_end - 4 : cats_end], "little")
        last_hostindex = int.from_bytes(
            self._mm[hidx_at + 4 * nhidx - 4 : hidx_at + 4 * nhidx], "little"
        )
        if last_index != n or last_hostindex != n_hosts:
            raise UrlDatabaseError(f"{self.path}: corrupt URL database index")
        try:
            metadata = json.loads(self._mm[meta_at:size] or b"{}")
        except (ValueError, RecursionError):
            metadata = None
        if not isinstance(metadata, dict):
            raise UrlDatabaseError(f"{self.path}: corrupt URL database metadata")
        self.metadata: dict[str, Any] = metadata
        body = memoryview(self._mm)[HEADER_SIZE:]
        off = 0
        self._index: Sequence[int] = _u32(body[off : off + 4 * nidx])
        off += 4 * nidx
        self._prefixes: Sequence[int] = _u32(body[off : off + 4 * n])
        off += 4 * n
        self._hashes = body[off : off + 32 * n]
        off += 32 * n
        self._cats: Sequence[int] = _u16(body[off : off + 2 * n])
        off += 2 * n
        self._hostindex: Sequence[int] = _u32(body[off : off + 4 * nhidx])
        off += 4 * nhidx
        self._hostkeys: Sequence[int] = _u32(body[off : off + 4 * n_hosts])
        off += 4 * n_hosts
        self._chain = body[off : off + (1 << cbits) // 8]
        off += (1 << cbits) // 8
        self._hostfilter = body[off : off + (1 << fbits) // 8]
        body.release()  # the slices keep the mapping; close() releases them
        self._chain_mask = (1 << cbits) - 1
        self._chain_byte_mask = self._chain_mask >> 3  # bit c & mask is at byte (c >> 3) & this
        self._hostfilter_shift = 32 - fbits
        self._hshift = 32 - hbits
        self._shift = 32 - bits
        self.entries = n
        self.trusted_entries = n_trusted
        self.built = built
        self.version = digest.hex()[:16]  # changes with content: keys any verdict cache
        # Bounded memos: listed suffixes of canonical hosts that the first filter probe did not
        # settle (most hosts never get here), and the exact host-key answers behind filter hits.
        self._host_memo: dict[str, tuple[str, ...]] = {}
        self._host_key_memo: dict[bytes, bool] = {}
        self.exact_host_checks = 0  # calls of the exact host test (stats; the filters' cost)

    # -- lookups -------------------------------------------------------------------------------

    def lookup_hash(self, h: bytes) -> int:
        """Category bits of a full hash, 0 when absent."""
        p = int.from_bytes(h[:4], "big")
        b = p >> self._shift
        lo = self._index[b]
        hi = self._index[b + 1]
        if hi > self.entries:  # only a crafted file (the checksum matched): stay in bounds
            hi = self.entries
        if hi - lo > 8:
            lo = bisect_left(self._prefixes, p, lo, hi)
        prefixes = self._prefixes
        while lo < hi:
            q = prefixes[lo]
            if q == p:
                if self._hashes[lo * 32 : lo * 32 + 32] == h:
                    return self._cats[lo]
            elif q > p:
                return 0
            lo += 1
        return 0

    def _is_host_key(self, host: bytes) -> bool:
        """Exact (SHA-256 prefix) test: is `host` the host part of some entry? Memoised: the
        filters send only entry hosts and their rare false positives here."""
        self.exact_host_checks += 1
        hit = self._host_key_memo.get(host)
        if hit is not None:
            return hit
        k = int.from_bytes(hashlib.sha256(host).digest()[:4], "big")
        keys, hidx = self._hostkeys, self._hostindex
        b = k >> self._hshift
        lo, hi = hidx[b], min(hidx[b + 1], len(keys))  # in bounds even in a crafted file
        if hi - lo > 8:
            lo = bisect_left(keys, k, lo, hi)
        result = False
        while lo < hi:
            q = keys[lo]
            if q >= k:
                result = q == k
                break
            lo += 1
        if len(self._host_key_memo) >= _MEMO_MAX:
            self._host_key_memo.clear()
        self._host_key_memo[host] = result
        return result

    def _listed_suffixes(self, host: str) -> tuple[str, ...]:
        """The suffixes of a canonical host that appear as the host part of some entry."""
        memo = self._host_memo.get(host)
        if memo is not None:
            return memo
        if _PLAIN_HOST(host) is not None:
            result = self._walk(host) or ()
        else:
            result = tuple(h for h in host_suffixes(host) if self._is_host_key(h.encode("latin-1")))
        if len(self._host_memo) >= _MEMO_MAX:
            self._host_memo.clear()
        self._host_memo[host] = result
        return result

    def _plain_suffixes(self, host: str) -> tuple[str, ...]:
        """`_listed_suffixes` of a plain lower-case host. Memoised: the hosts that get here
        mostly share their last two labels with entries (pages of popular sites, a public
        suffix such as co.uk), so they come back."""
        memo = self._host_memo.get(host)
        if memo is not None:
            return memo
        result = self._walk(host)
        if result is None:
            return ()  # settled by the first probe: as cheap as the memo, so not kept
        if len(self._host_memo) >= _MEMO_MAX:
            self._host_memo.clear()
        self._host_memo[host] = result
        return result

    def _unlisted_after_first_probe(self, host: str, last_two: int, c: int) -> bool:
        """A plain lower-case host whose last two labels (`last_two` characters, crc32 `c`) are
        in the chain filter: True when nothing is listed for it. Seen hosts come from the memo;
        for a new one the next longer suffix usually settles it (x.co.uk when co.uk only has
        entries below it) before the whole walk."""
        hit = self._host_memo.get(host)
        if hit is None:
            if len(host) > last_two:
                i = c >> self._hostfilter_shift
                if not self._hostfilter[i >> 3] >> (i & 7) & 1:
                    # The last two labels are no entry host; the next suffix (or the host itself,
                    # for three labels) absent from the chain means no entry at or above it.
                    dot = host.rfind(".", 0, len(host) - last_two - 1)
                    c = _crc32(host[dot + 1 :].encode())
                    if not self._chain[(c >> 3) & self._chain_byte_mask] >> (c & 7) & 1:
                        if len(self._host_memo) >= _MEMO_MAX:
                            self._host_memo.clear()
                        self._host_memo[host] = ()  # it comes back: the memo is cheaper still
                        return True
            hit = self._plain_suffixes(host)
        return not hit

    def _walk(self, host: str) -> tuple[str, ...] | None:
        """The suffixes of a plain lower-case host, shortest first, through the chain filter,
        then the host filter, then the exact host keys. The listed ones in `host_suffixes`
        order; None when the first probe settles it (most hosts: nothing listed)."""
        crc = _crc32
        chain, cmask = self._chain, self._chain_mask
        hostfilter, fshift = self._hostfilter, self._hostfilter_shift
        found: list[str] = []
        first = True
        dot = host.rfind(".")
        for _ in range(MAX_HOST_SUFFIXES - 1):  # proper suffixes of 2 to 5 labels
            if dot < 0:
                break
            dot = host.rfind(".", 0, dot)
            if dot < 0:
                break
            key = host[dot + 1 :].encode("ascii")
            c = crc(key)
            i = c & cmask
            if not chain[i >> 3] >> (i & 7) & 1:
                if found:
                    return tuple(reversed(found))
                return None if first else ()
            first = False
            i = c >> fshift
            if hostfilter[i >> 3] >> (i & 7) & 1 and self._is_host_key(key):
                found.append(key.decode("ascii"))
        key = host.encode("ascii")
        c = crc(key)
        i = c & cmask
        if chain[i >> 3] >> (i & 7) & 1:
            i = c >> fshift
            if hostfilter[i >> 3] >> (i & 7) & 1 and self._is_host_key(key):
                found.append(host)
        elif first:
            return None
        return tuple(reversed(found)) if found else ()

    def _url_unlisted(self, url: str) -> bool:
        """True when a plain http(s) URL's host has no listed suffix: the answer is None whatever
        the path. False when it has one, or when the URL is not plain (full algorithm)."""
        m = _FAST_URL(url)
        if m is not None and m.end() <= MAX_URL_LENGTH:  # the full algorithm cuts long URLs
            c = _crc32(m[2].encode())
            if not self._chain[(c >> 3) & self._chain_byte_mask] >> (c & 7) & 1:
                return True
            return self._unlisted_after_first_probe(m[1], m.end(2) - m.start(2), c)
        m = _PLAIN_URL(url)
        if m is None or m.end() > MAX_URL_LENGTH:
            return False
        host = m[1].lower()
        return not self._plain_suffixes(host)

    def lookup_expression(self, expression: str) -> int:
        return self.lookup_hash(hashlib.sha256(expression.encode("latin-1")).digest())

    def _match(self, target: str, expressions: Iterable[str]) -> UrlVerdict | None:
        found: UrlVerdict | None = None
        sha = hashlib.sha256
        for expr in expressions:
            bits = self.lookup_hash(sha(expr.encode("latin-1")).digest())
            if not bits:
                continue
            if bits & TRUSTED:
                return UrlVerdict(target, expr, (), trusted=True)
            if found is None:
                found = UrlVerdict(target, expr, _category_tuple(bits))
        return found

    def verdict_url(self, url: str | bytes) -> UrlVerdict | None:
        """Listed or trusted verdict (the CLI shows both); None when the URL is unknown."""
        if type(url) is str and self._url_unlisted(url):
            return None
        return self._verdict_url_full(url)

    def _verdict_url_full(self, url: str | bytes) -> UrlVerdict | None:
        _, host, path, query = split_url(url)
        hosts = self._listed_suffixes(host)
        if not hosts:
            return None
        paths = path_prefixes(path, query)
        target = url if isinstance(url, str) else url.decode("latin-1")
        return self._match(target, (h + p for h in hosts for p in paths))

    def _name_unlisted(self, name: str) -> bool:
        """`_url_unlisted` for a DNS query name or TLS SNI (one trailing dot allowed)."""
        if len(name) > _MAX_PLAIN_NAME:
            return False
        m = _FAST_NAME(name)
        if m is None and name.isascii():
            # Mixed case, as resolvers randomise it (DNS 0x20): lower case is the canonical form
            # of an ASCII name (str.lower() of anything else would change its bytes).
            m = _FAST_NAME(name.lower())
        if m is None:
            return False
        c = _crc32(m[2].encode())
        if not self._chain[(c >> 3) & self._chain_byte_mask] >> (c & 7) & 1:
            return True
        return self._unlisted_after_first_probe(m[1], m.end(2) - m.start(2), c)

    def verdict_host(self, host: str | bytes) -> UrlVerdict | None:
        raw = host if isinstance(host, str) else bytes(host).decode("latin-1")
        if self._name_unlisted(raw):
            return None
        canon = canonical_host(to_latin1(host).strip().rstrip("."))
        if not canon:
            raise UrlError(f"empty host name {raw!r:.200}")
        hosts = self._listed_suffixes(canon)
        if not hosts:
            return None
        return self._match(raw, (h + "/" for h in hosts))

    def check_url(self, url: str | bytes) -> UrlVerdict | None:
        """The verdict for a listed URL; None when unknown or trusted. Raises UrlError on no host."""
        if type(url) is str and len(url) <= MAX_URL_LENGTH:
            # The common case inline (this runs per HTTP request): a plain URL whose host's last
            # two labels are in no entry's chain; one crc32, no SHA-256, no memo.
            m = _FAST_URL(url)
            if m is not None:
                c = _crc32(m[2].encode())
                if not self._chain[(c >> 3) & self._chain_byte_mask] >> (c & 7) & 1:
                    return None
                if self._unlisted_after_first_probe(m[1], m.end(2) - m.start(2), c):
                    return None
            elif self._url_unlisted(url):
                return None
        v = self._verdict_url_full(url)
        return v if v is not None and v.listed else None

    def check_host(self, host: str | bytes) -> UrlVerdict | None:
        """For a DNS query name or TLS SNI: is the host (or a parent domain) listed?"""
        if type(host) is str and len(host) <= _MAX_PLAIN_NAME:
            m = _FAST_NAME(host)  # inline as in check_url: this runs per DNS query and TLS SNI
            if m is not None:
                c = _crc32(m[2].encode())
                if not self._chain[(c >> 3) & self._chain_byte_mask] >> (c & 7) & 1:
                    return None
                if self._unlisted_after_first_probe(m[1], m.end(2) - m.start(2), c):
                    return None
            elif self._name_unlisted(host):
                return None
        v = self.verdict_host(host)
        return v if v is not None and v.listed else None

    def check_http(self, host: str | bytes, uri: str | bytes) -> UrlVerdict | None:
        """An HTTP request: the Host header and the request target (origin form "/path",
        absolute form "http://host/path" of proxies, authority form "host:443" of CONNECT, or
        "*")."""
        if type(host) is bytes and uri[:1] in (b"/", "/") and len(host) <= _MAX_PLAIN_NAME:
            # The common request as the engine passes it (raw bytes, origin form).
            fast = _FAST_AUTHORITY_BYTES(host)
            if fast is not None:
                c = _crc32(fast[2])
                if not self._chain[(c >> 3) & self._chain_byte_mask] >> (c & 7) & 1:
                    return None
                name = fast[1].decode("ascii")
                if self._unlisted_after_first_probe(name, fast.end(2) - fast.start(2), c):
                    return None
        if isinstance(uri, bytes | bytearray | memoryview):
            uri = bytes(uri).decode("latin-1")
        if isinstance(host, bytes | bytearray | memoryview):
            host = bytes(host).decode("latin-1")
        if "://" in uri[:16]:
            return self.check_url(uri)
        if uri and not uri.startswith("/") and "/" not in uri and uri != "*":
            return self.check_url(f"http://{uri}/")  # CONNECT: the tunnel's host
        plain = _PLAIN_AUTHORITY(host) if len(host) <= _MAX_PLAIN_NAME else None
        if plain is not None:
            name = plain[1].lower()
            if not self._plain_suffixes(name):
                return None
        if not uri.startswith("/"):
            uri = "/"  # "*" or empty: the host alone
        return self.check_url(f"http://{host}{uri}")

    def close(self) -> None:
        self._index = self._prefixes = self._hostkeys = self._hostindex = self._cats = ()
        for view in ("_hashes", "_chain", "_hostfilter"):
            getattr(self, view).release()
        self._host_memo.clear()
        self._host_key_memo.clear()
        self._mm.close()

    def __enter__(self) -> UrlDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _index_bits(n: int) -> int:
    """About one entry per bucket: 2**bits buckets for n entries, 8..24 bits."""
    return max(8, min(24, (max(n, 1) - 1).bit_length()))


def _bucket_index(keys: array[int], bits: int) -> array[int]:
    """index[b] = first position whose key >> (32 - bits) is >= b, for sorted keys."""
    shift = 32 - bits
    counts = array("I", bytes(4 * ((1 << bits) + 1)))
    for k in keys:
        counts[(k >> shift) + 1] += 1
    total = 0
    for i in range(len(counts)):
        total += counts[i]
        counts[i] = total
    return counts


def _u32(view: memoryview) -> Sequence[int]:
    if sys.byteorder == "little":
        return view.cast("I")
    arr = array("I", bytes(view))  # big-endian host: one copy, then native order
    arr.byteswap()
    return arr


def _u16(view: memoryview) -> Sequence[int]:
    if sys.byteorder == "little":
        return view.cast("H")
    arr = array("H", bytes(view))
    arr.byteswap()
    return arr


def chain_keys(host: bytes) -> list[bytes]:
    """An entry host and its proper suffixes of 2 to 5 labels: the keys `_plain_suffixes` may
    probe on its way to this host, shortest first, so they all go in the chain filter."""
    keys = [host]
    end = host.rfind(b".")
    for _ in range(MAX_HOST_SUFFIXES - 1):
        if end < 0:
            break
        end = host.rfind(b".", 0, end)
        if end < 0:
            break
        keys.append(host[end + 1 :])
    return keys


def _filter_bits(keys: int) -> int:
    return max(10, min(MAX_FILTER_BITS, (max(keys, 1) * FILTER_BITS_PER_KEY - 1).bit_length()))


def _bloom(keys: Iterable[int], bits: int, shift: int) -> bytearray:
    """One-hash Bloom filter: bit (key >> shift) & (2**bits - 1) is set for every key."""
    out = bytearray(1 << bits >> 3)
    mask = (1 << bits) - 1
    for k in keys:
        i = (k >> shift) & mask
        out[i >> 3] |= 1 << (i & 7)
    return out


@dataclass
class BuildStats:
    entries: int = 0
    trusted: int = 0
    per_category: dict[str, int] = field(default_factory=dict)


class DatabaseBuilder:
    """Collects expressions with categories (merging duplicates) and writes the file."""

    def __init__(self) -> None:
        self._entries: dict[bytes, int] = {}
        self._hostkeys: set[int] = set()
        self._host_crcs: set[int] = set()
        self._chain_crcs: set[int] = set()
        self._last_host = b""
        self.sources: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add_expression(self, expression: str, bits: int) -> None:
        """`expression` is canonical "host/path[?query]" (see `feeds.expression_for`)."""
        slash = expression.find("/")
        if slash <= 0:
            raise ValueError(f"not a lookup expression (host/path): {expression!r:.100}")
        h = full_hash(expression)
        self._entries[h] = self._entries.get(h, 0) | bits
        host = expression[:slash].encode("latin-1")
        if host == self._last_host:
            return  # feeds often list many URLs of one host in a row
        self._last_host = host
        self._hostkeys.add(int.from_bytes(hashlib.sha256(host).digest()[:4], "big"))
        self._host_crcs.add(zlib.crc32(host))
        self._chain_crcs.update(zlib.crc32(k) for k in chain_keys(host))

    def write(self, path: str | os.PathLike[str]) -> BuildStats:
        # Sorted keys only (no list of pairs): a 1 M entry build stays a few hundred MB.
        keys = sorted(self._entries)
        entries = self._entries
        n = len(keys)
        bits = _index_bits(n)
        prefixes = array("I", (int.from_bytes(h[:4], "big") for h in keys))
        index = _bucket_index(prefixes, bits)
        hostkeys = array("I", sorted(self._hostkeys))
        hbits = _index_bits(len(hostkeys))
        hostindex = _bucket_index(hostkeys, hbits)
        cbits = _filter_bits(len(self._chain_crcs))
        fbits = _filter_bits(len(self._host_crcs))
        chain = _bloom(self._chain_crcs, cbits, 0)
        hostfilter = _bloom(self._host_crcs, fbits, 32 - fbits)
        stats = BuildStats(entries=n)
        cats = array("H", bytes(2 * n))
        for i, h in enumerate(keys):
            b = entries[h]
            if b & TRUSTED:
                b = TRUSTED  # trusted wins: the listed bits are dropped
                stats.trusted += 1
            cats[i] = b
        per_value = Counter(cats)
        for name, bit in CATEGORIES.items():
            stats.per_category[name] = sum(k for v, k in per_value.items() if v & bit)
        meta = json.dumps(
            {"sources": self.sources, "categories": stats.per_category, "trusted": stats.trusted},
            sort_keys=True,
        ).encode()
        if sys.byteorder != "little":
            for arr in (index, prefixes, hostindex, hostkeys, cats):
                arr.byteswap()
        digest = hashlib.sha256()
        hashes = b"".join(keys)
        parts: list[bytes | bytearray] = [
            index.tobytes(),
            prefixes.tobytes(),
            hashes,
            cats.tobytes(),
            hostindex.tobytes(),
            hostkeys.tobytes(),
            chain,
            hostfilter,
            meta,
        ]
        for part in parts:
            digest.update(part)
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            bits,
            hbits,
            cbits,
            fbits,
            len(meta),
            n,
            stats.trusted,
            len(hostkeys),
            len(self._chain_crcs),
            int(time.time()),
            digest.digest(),
        )
        tmp = Path(f"{os.fspath(path)}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(header)
            for part in parts:
                f.write(part)
        os.replace(tmp, path)  # readers see the old or the new file, never half of one
        return stats
