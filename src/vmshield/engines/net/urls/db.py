"""The URL database: SHA-256 full hashes of lookup expressions, with category bits.

One file, memory-mapped at load, nothing parsed into Python objects:

    header   80 bytes  "<8sHBBIQQQQ32s": magic, version, index bits, host index bits, metadata
                       length, entries, trusted entries, host keys, build time, SHA-256 of
                       everything after the header
    index    (2**bits + 1) little-endian u32: first entry whose prefix >> (32 - bits) is >= i
    prefixes entries x little-endian u32: the first 4 bytes of each full hash (big-endian value),
             sorted
    hashes   entries x 32 bytes, in the same order
    cats     entries x 1 byte: category bits (`CATEGORIES`; 0x80 = trusted)
    hostidx  (2**host index bits + 1) little-endian u32, as index, over the host keys
    hostkeys host keys x little-endian u32, sorted: 4-byte SHA-256 prefixes of the host part of
             every expression. A host none of whose suffixes is here has no entry at all, so the
             path expressions of its URLs are never hashed (the answer is cached per host).
    metadata JSON (sources, counts per category)

A lookup takes the 4-byte prefix, reads the index bucket (about one entry per bucket), compares
prefixes, then the full hash. Trusted entries win over every listed category.
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
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshield.engines.net.urls.canon import (
    UrlError,
    canonical_host,
    host_suffixes,
    path_prefixes,
    split_url,
    to_latin1,
)

MAGIC = b"VMSURLDB"
VERSION = 1
_HEADER = struct.Struct("<8sHBBIQQQQ32s")
HEADER_SIZE = _HEADER.size

# Category bits. The order is part of the file format (VERSION).
CATEGORIES: dict[str, int] = {
    "malicious": 0x01,
    "phishing": 0x02,
    "adware": 0x04,
    "malware": 0x08,
    "unwanted": 0x10,
    "riskware": 0x20,
    "suspicious": 0x40,
}
TRUSTED = 0x80
_MEMO_MAX = 65536
_PLAIN_AUTHORITY = re.compile(r"[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*(?::[0-9]{1,5})?").fullmatch
_AUTHORITY_END = re.compile(r"[/?#]")
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
                raise UrlDatabaseError(
                    f"{self.path}: truncated URL database ({size} bytes, header is {HEADER_SIZE})"
                )
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        (magic, version, bits, hbits, meta_len, n, n_trusted, n_hosts, built, digest) = (
            _HEADER.unpack_from(self._mm, 0)
        )
        if magic != MAGIC:
            raise UrlDatabaseError(f"{self.path}: not a vmshield URL database (bad magic)")
        if version != VERSION:
            raise UrlDatabaseError(
                f"{self.path}: URL database format version {version}, this vmshield reads {VERSION}"
            )
        if not 1 <= bits <= 24 or not 1 <= hbits <= 24 or n > MAX_ENTRIES or n_hosts > n:
            raise UrlDatabaseError(f"{self.path}: corrupt URL database header")
        nidx = (1 << bits) + 1
        nhidx = (1 << hbits) + 1
        expected = HEADER_SIZE + 4 * nidx + 37 * n + 4 * nhidx + 4 * n_hosts + meta_len
        if size != expected:
            raise UrlDatabaseError(
                f"{self.path}: truncated or corrupt URL database: header announces {expected} "
                f"bytes, file has {size}"
            )
        body = memoryview(self._mm)[HEADER_SIZE:]
        if hashlib.sha256(body).digest() != digest:
            body.release()
            raise UrlDatabaseError(f"{self.path}: corrupt URL database (checksum mismatch)")
        off = 0
        self._index: Sequence[int] = _u32(body[off : off + 4 * nidx])
        off += 4 * nidx
        self._prefixes: Sequence[int] = _u32(body[off : off + 4 * n])
        off += 4 * n
        self._hashes = body[off : off + 32 * n]
        off += 32 * n
        self._cats = body[off : off + n]
        off += n
        self._hostindex: Sequence[int] = _u32(body[off : off + 4 * nhidx])
        off += 4 * nhidx
        self._hostkeys: Sequence[int] = _u32(body[off : off + 4 * n_hosts])
        off += 4 * n_hosts
        self._hshift = 32 - hbits
        try:
            self.metadata: dict[str, Any] = json.loads(bytes(body[off : off + meta_len]) or b"{}")
        except ValueError:
            raise UrlDatabaseError(f"{self.path}: corrupt URL database metadata") from None
        if self._index[nidx - 1] != n or self._hostindex[nhidx - 1] != n_hosts:
            raise UrlDatabaseError(f"{self.path}: corrupt URL database index")
        self._shift = 32 - bits
        self.entries = n
        self.trusted_entries = n_trusted
        self.built = built
        self.version = digest.hex()[:16]  # changes with content: keys any verdict cache
        self._host_memo: dict[str, tuple[str, ...]] = {}
        self._auth_memo: dict[str, tuple[str, ...]] = {}

    # -- lookups -------------------------------------------------------------------------------

    def lookup_hash(self, h: bytes) -> int:
        """Category bits of a full hash, 0 when absent."""
        p = int.from_bytes(h[:4], "big")
        b = p >> self._shift
        lo = self._index[b]
        hi = self._index[b + 1]
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

    def _listed_suffixes(self, host: str) -> tuple[str, ...]:
        """The suffixes of a canonical host that appear as the host part of some entry."""
        memo = self._host_memo.get(host)
        if memo is not None:
            return memo
        keys, hidx, shift = self._hostkeys, self._hostindex, self._hshift
        found = []
        for h in host_suffixes(host):
            k = int.from_bytes(hashlib.sha256(h.encode("latin-1")).digest()[:4], "big")
            b = k >> shift
            lo, hi = hidx[b], hidx[b + 1]
            if hi - lo > 8:
                lo = bisect_left(keys, k, lo, hi)
            while lo < hi:
                q = keys[lo]
                if q >= k:
                    if q == k:
                        found.append(h)
                    break
                lo += 1
        result = tuple(found)
        if len(self._host_memo) >= _MEMO_MAX:
            self._host_memo.clear()
        self._host_memo[host] = result
        return result

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
                found = UrlVerdict(target, expr, tuple(category_names(bits)))
        return found

    def _authority_suffixes(self, authority: str) -> tuple[str, ...] | None:
        """Listed suffixes for a plain "host[:port]" as written in a URL (memoised); None when
        the authority is not plain and needs the full algorithm."""
        hit = self._auth_memo.get(authority)
        if hit is not None:
            return hit
        if _PLAIN_AUTHORITY(authority) is None:
            return None
        host = canonical_host(authority.partition(":")[0])
        if not host:
            return None
        result = self._listed_suffixes(host)
        if len(self._auth_memo) >= _MEMO_MAX:
            self._auth_memo.clear()
        self._auth_memo[authority] = result
        return result

    def verdict_url(self, url: str | bytes) -> UrlVerdict | None:
        """Listed or trusted verdict (the CLI shows both); None when the URL is unknown."""
        if type(url) is str and url.startswith(("http://", "https://")):
            # Most hosts have no entry at all: answer those from the host alone.
            start = 7 if url[4] == ":" else 8
            m = _AUTHORITY_END.search(url, start)
            hosts = self._authority_suffixes(url[start : m.start() if m else len(url)])
            if hosts == ():
                return None
        _, host, path, query = split_url(url)
        hosts = self._listed_suffixes(host)
        if not hosts:
            return None
        paths = path_prefixes(path, query)
        target = url if isinstance(url, str) else url.decode("latin-1")
        return self._match(target, (h + p for h in hosts for p in paths))

    def verdict_host(self, host: str | bytes) -> UrlVerdict | None:
        raw = host if isinstance(host, str) else bytes(host).decode("latin-1")
        canon = canonical_host(to_latin1(host).strip().rstrip("."))
        if not canon:
            raise UrlError(f"empty host name {raw!r:.200}")
        hosts = self._listed_suffixes(canon)
        if not hosts:
            return None
        return self._match(raw, (h + "/" for h in hosts))

    def check_url(self, url: str | bytes) -> UrlVerdict | None:
        """The verdict for a listed URL; None when unknown or trusted. Raises UrlError on no host."""
        v = self.verdict_url(url)
        return v if v is not None and v.listed else None

    def check_host(self, host: str | bytes) -> UrlVerdict | None:
        """For a DNS query name or TLS SNI: is the host (or a parent domain) listed?"""
        v = self.verdict_host(host)
        return v if v is not None and v.listed else None

    def check_http(self, host: str | bytes, uri: str | bytes) -> UrlVerdict | None:
        """An HTTP request: the Host header and the request target (origin form "/path",
        absolute form "http://host/path" of proxies, authority form "host:443" of CONNECT, or
        "*")."""
        if isinstance(uri, bytes | bytearray | memoryview):
            uri = bytes(uri).decode("latin-1")
        if isinstance(host, bytes | bytearray | memoryview):
            host = bytes(host).decode("latin-1")
        if "://" in uri[:16]:
            return self.check_url(uri)
        if uri and not uri.startswith("/") and "/" not in uri and uri != "*":
            return self.check_url(f"http://{uri}/")  # CONNECT: the tunnel's host
        if self._authority_suffixes(host) == ():
            return None
        if not uri.startswith("/"):
            uri = "/"  # "*" or empty: the host alone
        return self.check_url(f"http://{host}{uri}")

    def close(self) -> None:
        for view in ("_hashes", "_cats"):
            getattr(self, view).release()
        self._index = self._prefixes = self._hostkeys = self._hostindex = ()
        self._host_memo.clear()
        self._auth_memo.clear()
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
        self._hostkeys.add(int.from_bytes(full_hash(expression[:slash])[:4], "big"))

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
        stats = BuildStats(entries=n)
        cats = bytearray(n)
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
            for arr in (index, prefixes, hostindex, hostkeys):
                arr.byteswap()
        digest = hashlib.sha256()
        hashes = b"".join(keys)
        parts = [
            index.tobytes(),
            prefixes.tobytes(),
            hashes,
            bytes(cats),
            hostindex.tobytes(),
            hostkeys.tobytes(),
            meta,
        ]
        for part in parts:
            digest.update(part)
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            bits,
            hbits,
            len(meta),
            n,
            stats.trusted,
            len(hostkeys),
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
