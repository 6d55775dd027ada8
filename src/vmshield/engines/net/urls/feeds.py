"""Parsers for the URL feeds users have, and the build of a database from them.

Formats: plain lists (one URL or domain per line; hosts-file lines "0.0.0.0 name" and "*.name"
are understood), URLhaus CSV (with and without the `last_online` column), PhishTank JSON and CSV,
OpenPhish text. Every line that cannot be used is reported with its file and line, and skipped;
nothing is dropped silently. Only the files given are read.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vmshield.engines.net.urls.canon import UrlError, canonical_host, split_url, to_latin1
from vmshield.engines.net.urls.db import (
    TRUSTED,
    BuildStats,
    DatabaseBuilder,
    category_bits,
)

FEEDS = ("plain", "urlhaus", "phishtank", "openphish")
DEFAULT_CATEGORY = {
    "plain": "malicious",
    "urlhaus": "malware",
    "phishtank": "phishing",
    "openphish": "phishing",
}
MAX_LINE = 65536  # a longer "line" is not a URL; it bounds memory per entry
MAX_FEED_BYTES = 2 << 30
_HOST_OK = re.compile(r"^(?:[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*|\[[0-9a-f:.]+\])$")
_HOSTS_FILE_ADDR = ("0.0.0.0", "127.0.0.1", "::", "::1", "::0")
_URLHAUS_HEADER_V1 = [
    "id",
    "dateadded",
    "url",
    "url_status",
    "threat",
    "tags",
    "urlhaus_link",
    "reporter",
]


class FeedError(Exception):
    """A feed file that cannot be read at all (missing, unreadable, wrong format as a whole)."""


@dataclass(slots=True, frozen=True)
class Rejected:
    file: str
    line: int  # 1-based; for JSON feeds the line where the entry starts when known, else 0
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(slots=True, frozen=True)
class FeedEntry:
    value: str  # a URL or a host name as the feed gave it
    is_host: bool
    file: str
    line: int


@dataclass
class BuildReport:
    stats: BuildStats
    accepted: int = 0  # feed entries turned into expressions (before merging duplicates)
    rejected: list[Rejected] = field(default_factory=list)
    per_file: dict[str, int] = field(default_factory=dict)


def expression_for(entry: FeedEntry) -> str:
    """The one lookup expression that lists this entry (host + "/" or host + path [+ query])."""
    if entry.is_host:
        host = canonical_host(to_latin1(entry.value.strip().lstrip("*").strip(".")))
        path, query = "/", None
    else:
        _, host, path, query = split_url(entry.value)
    if not host:
        raise UrlError("no host")
    if len(host) > 253 or _HOST_OK.match(host) is None:
        raise UrlError(f"invalid host name {host!r:.80}")
    if "." not in host and not host.startswith("["):
        # A single label ("com", "localhost") would list a whole top-level domain.
        raise UrlError(f"refusing single-label host {host!r}")
    return host + path if query is None else f"{host}{path}?{query}"


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        size = path.stat().st_size
        if size > MAX_FEED_BYTES:
            raise FeedError(f"{path}: feed larger than {MAX_FEED_BYTES} bytes")
        f = open(path, "rb")  # noqa: SIM115 - closed below, generator
    except OSError as exc:
        raise FeedError(f"{path}: cannot read feed: {exc.strerror}") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark, as some editors write
            yield lineno, raw.decode("utf-8", "surrogateescape").rstrip("\r\n")


def _too_long(file: str, lineno: int, line: str, rejected: list[Rejected]) -> bool:
    if len(line) > MAX_LINE:
        rejected.append(Rejected(file, lineno, f"line longer than {MAX_LINE} characters"))
        return True
    return False


def parse_plain(
    path: Path, rejected: list[Rejected], url_only: bool = False
) -> Iterator[FeedEntry]:
    file = str(path)
    for lineno, line in _read_lines(path):
        if _too_long(file, lineno, line, rejected):
            continue
        text = line.strip()
        if not text or text.startswith(("#", ";", "!")):
            continue
        if " #" in text or "\t#" in text:
            text = re.split(r"\s#", text, maxsplit=1)[0].strip()
        fields = text.split()
        if len(fields) >= 2 and fields[0] in _HOSTS_FILE_ADDR and not url_only:
            # A hosts-file blocklist line: one or more names after the sink address.
            for name in fields[1:]:
                yield FeedEntry(name, True, file, lineno)
            continue
        if len(fields) != 1:
            rejected.append(
                Rejected(file, lineno, f"expected one URL or domain, got {len(fields)} fields")
            )
            continue
        is_host = not url_only and "/" not in text and "?" not in text
        if url_only and "://" not in text:
            rejected.append(Rejected(file, lineno, "not a URL (no scheme)"))
            continue
        yield FeedEntry(text, is_host, file, lineno)


def parse_openphish(path: Path, rejected: list[Rejected]) -> Iterator[FeedEntry]:
    return parse_plain(path, rejected, url_only=True)


def parse_urlhaus(path: Path, rejected: list[Rejected]) -> Iterator[FeedEntry]:
    """URLhaus CSV: `id,dateadded,url,url_status[,last_online],threat,tags,urlhaus_link,reporter`."""
    file = str(path)
    url_col = 2
    for lineno, line in _read_lines(path):
        if _too_long(file, lineno, line, rejected):
            continue
        if not line.strip():
            continue
        if line.startswith("#"):
            header = [c.strip() for c in line.lstrip("#").split(",")]
            if "url" in header and "id" in header:
                url_col = header.index("url")
            continue
        try:
            row = next(csv.reader([line]))
        except csv.Error as exc:
            rejected.append(Rejected(file, lineno, f"bad CSV: {exc}"))
            continue
        if row and row[0] == "id":
            url_col = row.index("url") if "url" in row else url_col
            continue
        if len(row) not in (8, 9) or url_col >= len(row):
            rejected.append(
                Rejected(file, lineno, f"expected 8 or 9 URLhaus columns, got {len(row)}")
            )
            continue
        url = row[url_col].strip()
        if "://" not in url:
            rejected.append(Rejected(file, lineno, f"url column is not a URL: {url[:80]!r}"))
            continue
        yield FeedEntry(url, False, file, lineno)


def parse_phishtank(path: Path, rejected: list[Rejected]) -> Iterator[FeedEntry]:
    """PhishTank's `online-valid.json` (a list of objects with "url") or `online-valid.csv`."""
    file = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
    except OSError as exc:
        raise FeedError(f"{path}: cannot read feed: {exc.strerror}") from None
    if head.startswith(b"[") or head.startswith(b"{"):
        yield from _phishtank_json(path, rejected)
        return
    url_col: int | None = None
    for lineno, line in _read_lines(path):
        if _too_long(file, lineno, line, rejected) or not line.strip():
            continue
        try:
            row = next(csv.reader([line]))
        except csv.Error as exc:
            rejected.append(Rejected(file, lineno, f"bad CSV: {exc}"))
            continue
        if url_col is None:
            if "url" not in row:
                raise FeedError(f"{path}:{lineno}: PhishTank CSV without a header naming 'url'")
            url_col = row.index("url")
            continue
        if url_col >= len(row) or "://" not in row[url_col]:
            rejected.append(Rejected(file, lineno, "no URL in the url column"))
            continue
        yield FeedEntry(row[url_col].strip(), False, file, lineno)


def _json_elements(text: str, path: Path) -> Iterator[tuple[int, object]]:
    """(line, element) for each element of a top-level JSON array (or a single object), with
    the line where the element starts; one pass over the text."""
    dec = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def fail(exc: json.JSONDecodeError) -> FeedError:
        return FeedError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}")

    i = ws.match(text, 0).end()  # type: ignore[union-attr]
    if text.startswith("{", i):
        try:
            obj, _ = dec.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise fail(exc) from None
        yield line_at(i), obj
        return
    if not text.startswith("[", i):
        raise FeedError(f"{path}: PhishTank JSON must be a list of objects")
    i = ws.match(text, i + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", i):
        return
    while True:
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise fail(exc) from None
        yield line_at(i), obj
        i = ws.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith(",", i):
            i = ws.match(text, i + 1).end()  # type: ignore[union-attr]
        elif text.startswith("]", i):
            if text[i + 1 :].strip():
                raise FeedError(f"{path}:{line_at(i)}: invalid JSON: data after the list")
            return
        else:
            raise FeedError(f"{path}:{line_at(i)}: invalid JSON: expected ',' or ']'")


def _phishtank_json(path: Path, rejected: list[Rejected]) -> Iterator[FeedEntry]:
    file = str(path)
    if path.stat().st_size > MAX_FEED_BYTES:
        raise FeedError(f"{path}: feed larger than {MAX_FEED_BYTES} bytes")
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    for n, (line, item) in enumerate(_json_elements(text, path), 1):
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or "://" not in url:
            rejected.append(Rejected(file, line, f'entry {n}: no "url" string'))
            continue
        if len(url) > MAX_LINE:
            rejected.append(Rejected(file, line, f"entry {n}: URL longer than {MAX_LINE}"))
            continue
        yield FeedEntry(url, False, file, line)


PARSERS = {
    "plain": parse_plain,
    "urlhaus": parse_urlhaus,
    "phishtank": parse_phishtank,
    "openphish": parse_openphish,
}


def iter_feed(
    feed: str, path: str | os.PathLike[str], rejected: list[Rejected]
) -> Iterator[FeedEntry]:
    try:
        parser = PARSERS[feed]
    except KeyError:
        raise FeedError(f"unknown feed format {feed!r} (known: {', '.join(FEEDS)})") from None
    p = Path(path)
    if not p.is_file():
        raise FeedError(f"{p}: no such feed file")
    return parser(p, rejected)


def add_feed(
    builder: DatabaseBuilder,
    feed: str,
    path: str | os.PathLike[str],
    bits: int,
    report: BuildReport,
) -> int:
    """Add every usable entry of one feed file; returns how many were accepted."""
    before = len(report.rejected)
    count = 0
    for entry in iter_feed(feed, path, report.rejected):
        try:
            expr = expression_for(entry)
        except UrlError as exc:
            report.rejected.append(Rejected(entry.file, entry.line, str(exc)))
            continue
        builder.add_expression(expr, bits)
        count += 1
    report.accepted += count
    report.per_file[str(path)] = count
    builder.sources.append(
        {
            "file": os.fspath(path),
            "feed": feed,
            "trusted": bool(bits & TRUSTED),
            "entries": count,
            "rejected": len(report.rejected) - before,
        }
    )
    return count


def build_database(
    feeds: Sequence[tuple[str, str | os.PathLike[str]]],
    output: str | os.PathLike[str],
    *,
    category: str | None = None,
    trusted: Sequence[str | os.PathLike[str]] = (),
    lists: Sequence[tuple[str, str | os.PathLike[str]]] = (),
) -> BuildReport:
    """Build a database file from (feed format, path) pairs, (category, path) plain category
    lists (UT1 / Toulouse blacklists: one domain per line, e.g. ("gambling", ".../domains")),
    and trusted plain lists. An expression in several gets every category."""
    builder = DatabaseBuilder()
    report = BuildReport(stats=BuildStats())
    forced = category_bits(category) if category else None
    listed = [(category_bits(cat), path) for cat, path in lists]  # unknown names: before reading
    for feed, path in feeds:
        bits = (
            forced if forced is not None else category_bits(DEFAULT_CATEGORY.get(feed, "malicious"))
        )
        add_feed(builder, feed, path, bits, report)
    for bits, path in listed:
        add_feed(builder, "plain", path, bits, report)
    for path in trusted:
        add_feed(builder, "plain", path, TRUSTED, report)
    report.stats = builder.write(output)
    return report
