"""The URL database: build from each feed format, lookups, trusted list, corrupt files."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmshield.engines.net.urls import (
    UrlDatabase,
    UrlDatabaseError,
    build_database,
    url_event,
)
from vmshield.engines.net.urls import db as url_db_module
from vmshield.engines.net.urls.canon import (
    _SIMPLE,
    UrlError,
    _canonical_host,
    canonicalize,
    host_suffixes,
    split_url,
    to_latin1,
    url_expressions,
)
from vmshield.engines.net.urls.db import (
    CATEGORIES,
    CONTENT_CATEGORIES,
    HEADER_SIZE,
    THREAT_CATEGORIES,
    TRUSTED,
    DatabaseBuilder,
    category_names,
)
from vmshield.engines.net.urls.feeds import FeedError

URLHAUS_WITH_LAST_ONLINE = """\
################################################################
# abuse.ch URLhaus Database Dump (CSV)                         #
################################################################
#
# id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter
"3001","2024-05-01 10:00:00","http://203.0.113.7:8080/bins/mips","online","2024-05-01 10:00:00","malware_download","elf,mirai","https://urlhaus.abuse.ch/url/3001/","anon"
"3002","2024-05-01 10:01:00","https://dl.badfiles.example/a/b/payload.exe","offline","2024-05-01 11:00:00","malware_download","exe","https://urlhaus.abuse.ch/url/3002/","anon"
"3003","2024-05-01 10:02:00","not a url","online","","malware_download","","https://urlhaus.abuse.ch/url/3003/","anon"
"3004","broken row"
"""

URLHAUS_WITHOUT_LAST_ONLINE = """\
# id,dateadded,url,url_status,threat,tags,urlhaus_link,reporter
"4001","2021-01-01 00:00:00","http://old.badfiles.example/x.doc","offline","malware_download","doc","https://urlhaus.abuse.ch/url/4001/","anon"
"""


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_plain_list_domains_urls_hosts_file_and_trusted(tmp_path: Path) -> None:
    feed = _write(
        tmp_path,
        "plain.txt",
        "# my blocklist\n"
        "evil.example\n"
        "0.0.0.0 ads.tracker.example  pixel.tracker.example\n"
        "*.wild.example\n"
        "http://mixed.example/dir/page.php?id=7\n"
        "two fields here\n"
        "com\n"
        "\n",
    )
    trusted = _write(tmp_path, "trusted.txt", "safe.evil.example\n")
    db_path = tmp_path / "u.db"
    report = build_database([("plain", feed)], db_path, category="adware", trusted=[trusted])
    assert report.stats.entries == 6
    assert [(r.line, r.reason) for r in report.rejected] == [
        (6, "expected one URL or domain, got 3 fields"),
        (7, "refusing single-label host 'com'"),
    ]
    assert all(r.file == str(feed) for r in report.rejected)
    with UrlDatabase(db_path) as db:
        v = db.check_url("http://deep.sub.EVIL.example/anything?x=1")
        assert v is not None and v.categories == ("adware",) and v.expression == "evil.example/"
        assert db.check_url("http://safe.evil.example/login") is None  # trusted wins
        assert db.verdict_url("http://safe.evil.example/login").trusted
        assert db.check_host("x.ads.tracker.example") is not None  # DNS / SNI
        assert db.check_host("tracker.example") is None  # the parent is not listed
        assert db.check_host("pixel.tracker.example") is not None
        assert db.check_host("a.wild.example.") is not None
        assert db.check_url("http://mixed.example/dir/page.php?id=7") is not None
        assert db.check_url("http://mixed.example/dir/page.php?id=8") is None
        assert db.check_url("http://mixed.example/dir/") is None
        assert db.check_url("http://unlisted.example/") is None
        assert db.check_http(b"Evil.Example:8080", b"/x/../y") is not None
        assert db.check_http("mixed.example", "/dir/page.php?id=7") is not None
        assert db.check_http("proxy.local", "http://evil.example/x") is not None  # proxy form
        assert db.check_http("", "www.evil.example:443") is not None  # CONNECT
        assert db.check_http("evil.example", "*") is not None  # OPTIONS *
        assert db.check_http("clean.example", "/evil.example") is None
        assert db.metadata["sources"][0]["entries"] == 5


def test_unicode_domains_and_byte_order_mark(tmp_path: Path) -> None:
    feed = tmp_path / "idn.txt"
    feed.write_bytes("\ufeffbücher.example\nhttp://straße.example/x/\n".encode())
    db_path = tmp_path / "u.db"
    report = build_database([("plain", feed)], db_path)
    assert report.rejected == [] and report.stats.entries == 2
    with UrlDatabase(db_path) as db:
        assert db.check_host("xn--bcher-kva.example") is not None  # as DNS carries it
        assert db.check_host("www.bücher.example") is not None
        assert db.check_url("http://www.bücher.example/") is not None
        assert db.check_url("http://strasse.example/x/y") is not None  # IDNA 2003 maps ß


def test_urlhaus_with_and_without_last_online(tmp_path: Path) -> None:
    new = _write(tmp_path, "urlhaus.csv", URLHAUS_WITH_LAST_ONLINE)
    old = _write(tmp_path, "urlhaus_old.csv", URLHAUS_WITHOUT_LAST_ONLINE)
    db_path = tmp_path / "u.db"
    report = build_database([("urlhaus", new), ("urlhaus", old)], db_path)
    assert report.accepted == 3
    assert [(Path(r.file).name, r.line) for r in report.rejected] == [
        ("urlhaus.csv", 8),
        ("urlhaus.csv", 9),
    ]
    assert "not a URL" in report.rejected[0].reason
    assert "8 or 9" in report.rejected[1].reason
    with UrlDatabase(db_path) as db:
        v = db.check_url("http://203.0.113.7/bins/mips")  # the port is not part of the key
        assert v is not None and v.categories == ("malware",)
        assert db.check_url("https://dl.badfiles.example/a/b/payload.exe") is not None
        assert db.check_url("http://old.badfiles.example/x.doc") is not None
        assert db.check_url("https://dl.badfiles.example/a/b/other.exe") is None


def test_phishtank_json_and_csv_and_openphish(tmp_path: Path) -> None:
    entries = [
        {"phish_id": 1, "url": "http://login.bank-secure.example/verify", "verified": "yes"},
        {"phish_id": 2, "url": "https://paypa1.example/signin?session=1", "verified": "yes"},
        {"phish_id": 3, "verified": "yes"},
    ]
    pj = _write(tmp_path, "online-valid.json", json.dumps(entries, indent=1))
    pc = _write(
        tmp_path,
        "online-valid.csv",
        "phish_id,url,phish_detail_url,submission_time,verified,verification_time,online,target\n"
        "9,http://csv-phish.example/a,http://www.phishtank.com/phish_detail.php?phish_id=9,"
        "2024-01-01T00:00:00+00:00,yes,2024-01-01T00:00:00+00:00,yes,Other\n"
        "10,,x,y,yes,z,yes,Other\n",
    )
    op = _write(tmp_path, "openphish.txt", "https://op.example/x/\nop-without-scheme.example\n")
    db_path = tmp_path / "u.db"
    report = build_database([("phishtank", pj), ("phishtank", pc), ("openphish", op)], db_path)
    reasons = {(Path(r.file).name, r.line): r.reason for r in report.rejected}
    assert reasons[("online-valid.csv", 3)] == "no URL in the url column"
    assert reasons[("openphish.txt", 2)] == "not a URL (no scheme)"
    # json.dumps(indent=1): "[", then 5 lines per entry; the third starts on line 12.
    assert reasons[("online-valid.json", 12)] == 'entry 3: no "url" string'
    with UrlDatabase(db_path) as db:
        for url in (
            "http://login.bank-secure.example/verify",
            "https://paypa1.example/signin?session=1",
            "http://csv-phish.example/a",
            "https://op.example/x/deeper/page.html",  # path prefix of a listed directory
        ):
            v = db.check_url(url)
            assert v is not None and v.categories == ("phishing",), url


def test_invalid_json_feed_names_file_and_line(tmp_path: Path) -> None:
    bad = _write(tmp_path, "p.json", '[\n {"url": "http://a.example/"},\n {oops}\n]')
    with pytest.raises(FeedError, match=r"p\.json:3: invalid JSON"):
        build_database([("phishtank", bad)], tmp_path / "u.db")
    bad.write_text('[{"url": "http://a.example/"}\n\n{"url": "http://b.example/"}]')
    with pytest.raises(FeedError, match=r"p\.json:3: invalid JSON: expected ',' or ']'"):
        build_database([("phishtank", bad)], tmp_path / "u.db")


def test_missing_feed_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="no such feed file"):
        build_database([("plain", tmp_path / "nope.txt")], tmp_path / "u.db")
    f = _write(tmp_path, "x.txt", "a.example\n")
    with pytest.raises(FeedError, match="unknown feed format"):
        build_database([("spamhaus", f)], tmp_path / "u.db")
    with pytest.raises(ValueError, match="unknown URL category"):
        build_database([("plain", f)], tmp_path / "u.db", category="bogus")


def test_categories_merge_for_the_same_expression(tmp_path: Path) -> None:
    b = DatabaseBuilder()
    b.add_expression("multi.example/", 0x02)
    b.add_expression("multi.example/", 0x08)
    b.write(tmp_path / "u.db")
    with UrlDatabase(tmp_path / "u.db") as db:
        assert db.check_host("multi.example").categories == ("phishing", "malware")


def test_content_category_lists_with_threat_feeds(tmp_path: Path) -> None:
    """Category lists as users have them (UT1: one domain per line per category) built into one
    database with a threat feed; every category of the one vocabulary survives the file."""
    gambling = _write(tmp_path, "gambling", "casino.example\npoker.example\n")
    adult = _write(tmp_path, "adult", "adult.example\ncasino.example\n")
    threats = _write(tmp_path, "bad.txt", "casino.example/payload.exe\nevil.example\n")
    out = tmp_path / "u.db"
    report = build_database(
        [("plain", threats)], out, lists=[("gambling", gambling), ("adult", adult)]
    )
    assert report.stats.per_category["gambling"] == 2 and report.stats.per_category["adult"] == 2
    assert report.stats.per_category["malicious"] == 2
    with pytest.raises(ValueError, match="unknown URL category 'casino'"):
        build_database([], tmp_path / "x.db", lists=[("casino", gambling)])
    with UrlDatabase(out) as db:
        assert db.check_host("www.poker.example").categories == ("gambling",)
        assert db.check_url("http://casino.example/").categories == ("adult", "gambling")
        # a URL listed under a categorised host: its own (most specific) expression answers
        v = db.check_url("http://casino.example/payload.exe")
        assert v is not None and v.expression == "casino.example/payload.exe"
        assert v.categories == ("malicious",)
        assert db.check_host("evil.example").categories == ("malicious",)
    # Every category bit round-trips (the high byte included).
    b = DatabaseBuilder()
    for name, bit in CATEGORIES.items():
        b.add_expression(f"{name}.example/", bit)
    b.write(out)
    with UrlDatabase(out) as db:
        assert {n: db.check_host(f"{n}.example").categories for n in CATEGORIES} == {
            n: (n,) for n in CATEGORIES
        }
    assert set(CATEGORIES) == set(THREAT_CATEGORIES) | set(CONTENT_CATEGORIES)


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    f = _write(tmp_path, "f.txt", "".join(f"host{i}.example\n" for i in range(500)))
    out = tmp_path / "u.db"
    build_database([("plain", f)], out)
    return out


def test_truncated_database_is_a_clear_error(small_db: Path) -> None:
    data = small_db.read_bytes()
    small_db.write_bytes(data[:-10])
    with pytest.raises(UrlDatabaseError, match="truncated or corrupt.*announces"):
        UrlDatabase(small_db)
    small_db.write_bytes(data[:20])
    with pytest.raises(UrlDatabaseError, match="truncated URL database"):
        UrlDatabase(small_db)


def test_corrupt_database_is_a_clear_error(small_db: Path) -> None:
    data = bytearray(small_db.read_bytes())
    data[HEADER_SIZE + 100] ^= 0xFF
    small_db.write_bytes(bytes(data))
    with pytest.raises(UrlDatabaseError, match="checksum mismatch"):
        UrlDatabase(small_db)
    small_db.write_bytes(b"NOTADB!!" + bytes(data[8:]))
    with pytest.raises(UrlDatabaseError, match="bad magic"):
        UrlDatabase(small_db)


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UrlDatabaseError, match="cannot open"):
        UrlDatabase(tmp_path / "missing.db")


def test_every_entry_of_a_larger_database_is_found(tmp_path: Path) -> None:
    b = DatabaseBuilder()
    exprs = [f"h{i}.example/p{i % 7}/" for i in range(20000)]
    for e in exprs:
        b.add_expression(e, 0x01)
    b.write(tmp_path / "u.db")
    with UrlDatabase(tmp_path / "u.db") as db:
        assert db.entries == 20000
        assert all(db.lookup_expression(e) == 0x01 for e in exprs)
        assert not any(db.lookup_expression(f"h{i}.example/other/") for i in range(2000))


def test_url_event_fields(small_db: Path) -> None:
    with UrlDatabase(small_db) as db:
        v = db.check_host("www.host7.example")
        assert v is not None
        ev = url_event(
            v,
            ts=1700000000.0,
            source="dns",
            src_ip="10.0.0.2",
            dest_ip="10.0.0.1",
            dest_port=53,
            proto="UDP",
            app_proto="dns",
            flow_id=42,
        )
    eve = ev.to_eve()
    assert eve["event_type"] == "url" and eve["url"]["categories"] == ["malicious"]
    assert eve["url"]["expression"] == "host7.example/" and eve["flow_id"] == 42
    assert eve["timestamp"].startswith("2023-11-14T22:13:20")


_url_chars = st.text(alphabet=st.sampled_from("abcXYZ019-._~!$&'()*+,;=:@/%#?.. "), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    host=st.from_regex(r"[A-Za-z0-9\-]{1,8}(\.[A-Za-z0-9\-]{1,8}){0,3}", fullmatch=True),
    rest=_url_chars,
)
def test_fast_path_agrees_with_full_algorithm(host: str, rest: str) -> None:
    url = f"http://{host}/{rest}"
    # Bytes input always takes the full algorithm; str input may take the fast path.
    assert split_url(url) == split_url(url.encode())
    canon = canonicalize(url)
    if _SIMPLE.fullmatch(url) and "%25" not in canon:
        assert canonicalize(canon) == canon


@pytest.fixture(scope="module")
def mixed_db(tmp_path_factory: pytest.TempPathFactory) -> UrlDatabase:
    tmp = tmp_path_factory.mktemp("mixed")
    b = DatabaseBuilder()
    b.add_expression("evil.example/", 0x01)
    b.add_expression("a.b.example/x/", 0x02)
    b.add_expression("a.b.example/x/y.html?q=1", 0x08)
    b.add_expression("10.1.2.3/", 0x01)
    b.add_expression("ok.evil.example/", 0x80)
    b.write(tmp / "u.db")
    return UrlDatabase(tmp / "u.db")


@settings(max_examples=400, deadline=None)
@given(
    scheme=st.sampled_from(["http://", "https://", "HTTP://", ""]),
    user=st.sampled_from(["", "u:p@"]),
    host=st.sampled_from(
        [
            "evil.example",
            "WWW.Evil.Example",
            "ok.evil.example",
            "a.b.example",
            "b.example",
            "x.a.b.example.",
            "10.1.2.3",
            "0x0a.1.2.3",
            "167838211",
            "clean.example",
            "evil.example:81",
        ]
    ),
    path=st.sampled_from(["", "/", "/x/", "/x/y.html", "/x/./y.html", "/x//y.html", "/z/../x/"]),
    query=st.sampled_from(["", "?q=1", "?q=2", "#frag"]),
)
def test_host_memo_fast_path_agrees_with_full_lookup(
    mixed_db: UrlDatabase, scheme: str, user: str, host: str, path: str, query: str
) -> None:
    url = f"{scheme}{user}{host}{path}{query}"
    # Bytes always take the full algorithm; str may be answered from the per-host memo.
    fast, full = mixed_db.verdict_url(url), mixed_db.verdict_url(url.encode())
    assert (fast is None) == (full is None), url
    if fast is not None and full is not None:
        assert (fast.expression, fast.categories, fast.trusted) == (
            full.expression,
            full.categories,
            full.trusted,
        )


# -- hosts never seen before: the crc32 filters against Google's algorithm ---------------------

_LABELS = ["a", "b", "c", "ab", "x-y", "k_9", "co", "uk", "www", "0x1f", "7"]
_PATHS = ["/", "/p/", "/p/q.html", "/p/q.html?x=1", "/r/"]


def _random_host(rng: random.Random) -> str:
    return ".".join(rng.choice(_LABELS) for _ in range(rng.randint(1, 7)))


def _filter_db(path: Path, bits_per_key: int) -> UrlDatabase:
    """Entries on hosts made of few labels, so that lookups share suffixes with them; with one
    bit per key the filters answer "maybe" most of the time and the exact stage is exercised."""
    rng = random.Random(3)
    b = DatabaseBuilder()
    for _ in range(300):
        bits = rng.choice([0x01, 0x02, 0x08, 0x80])
        b.add_expression(_random_host(rng) + rng.choice(_PATHS), bits)
    b.add_expression("co.uk/", 0x01)  # a two-label host with entries below it too
    saved = url_db_module.FILTER_BITS_PER_KEY
    url_db_module.FILTER_BITS_PER_KEY = bits_per_key
    try:
        b.write(path)
    finally:
        url_db_module.FILTER_BITS_PER_KEY = saved
    return UrlDatabase(path)


@pytest.fixture(scope="module", params=[32, 1], ids=["sparse-filter", "dense-filter"])
def filter_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    db = _filter_db(tmp_path_factory.mktemp("filters") / "u.db", request.param)
    yield db
    db.close()


def _reference(db: UrlDatabase, expressions: list[str]) -> tuple[str, tuple[str, ...], bool] | None:
    """Google's algorithm with no shortcut: every expression hashed and looked up."""
    found = None
    for e in expressions:
        bits = db.lookup_expression(e)
        if bits & TRUSTED:
            return (e, (), True)
        if bits and found is None:
            found = (e, tuple(category_names(bits)), False)
    return found


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        v = fn(*args)
    except UrlError:
        return "error"
    return None if v is None else (v.expression, v.categories, v.trusted)


def _ref_url(db: UrlDatabase, url: str) -> Any:
    try:
        return _reference(db, url_expressions(url.encode("utf-8")))  # bytes: the full algorithm
    except UrlError:
        return "error"


def _listed(outcome: Any) -> Any:
    return outcome if outcome in (None, "error") or not outcome[2] else None


@settings(max_examples=600, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scheme=st.sampled_from(["http://", "https://", "HTTP://", "", "ftp://"]),
    user=st.sampled_from(["", "", "", "u:p@"]),
    port=st.sampled_from(["", "", "", ":8080", ":"]),
    tail=st.sampled_from(["", ".", ".."]),
    path=st.sampled_from(["", *_PATHS, "/p/./q.html", "/P/", "/p/q.html#f", "?x=1"]),
    case=st.sampled_from(["lower", "upper", "title"]),
    escape=st.sampled_from(["", "", "", "%2e", "%61"]),
)
def test_fast_paths_agree_with_full_algorithm(
    filter_db: UrlDatabase,
    seed: int,
    scheme: str,
    user: str,
    port: str,
    tail: str,
    path: str,
    case: str,
    escape: str,
) -> None:
    db = filter_db
    host = _random_host(random.Random(seed))
    host = getattr(host, case)() + tail
    if escape == "%2e":
        host = host.replace(".", "%2e", 1)
    elif escape == "%61":
        host = host.replace("a", "%61")
    url = f"{scheme}{user}{host}{port}{path}"
    expected = _ref_url(db, url)
    assert _outcome(db.verdict_url, url) == expected, url
    assert _outcome(db.verdict_url, url.encode()) == expected, url
    assert _outcome(db.check_url, url) == _listed(expected), url
    # DNS query names and TLS SNI: the host alone, every suffix with path "/".
    name = f"{host}"
    canon = _canonical_host(to_latin1(name).strip().rstrip("."))
    expected_host = (
        "error" if not canon else _reference(db, [h + "/" for h in host_suffixes(canon)])
    )
    assert _outcome(db.verdict_host, name) == expected_host, name
    assert _outcome(db.check_host, name) == _listed(expected_host), name
    # HTTP requests as the engine passes them: raw Host header and origin-form target.
    if not user and path.startswith("/"):
        authority = f"{host}{port}"
        expected_http = _listed(_ref_url(db, f"http://{authority}{path}"))
        assert _outcome(db.check_http, authority.encode(), path.encode()) == expected_http
        assert _outcome(db.check_http, authority, path) == expected_http


def test_every_listed_host_is_found_through_the_filters(tmp_path: Path) -> None:
    rng = random.Random(11)
    hosts = {_random_host(rng) + f".h{i}.example" for i in range(3000)}
    b = DatabaseBuilder()
    for h in hosts:
        b.add_expression(f"{h}/", 0x04)
    b.write(tmp_path / "u.db")
    with UrlDatabase(tmp_path / "u.db") as db:
        for h in hosts:
            assert db.check_host(h) is not None, h
            if h.count(".") < 5:  # a parent domain counts up to five labels
                v = db.check_host("deep.er." + h)
                assert v is not None and v.expression == f"{h}/", h
            else:
                assert db.check_host("deep.er." + h) is None, h
            assert db.check_url(f"http://{h}/any/path") is not None, h
            assert db.check_http(h.encode(), b"/x") is not None, h


def test_new_hosts_are_answered_without_sha256(tmp_path: Path) -> None:
    # The point of the filters: a host that shares nothing with the entries costs no SHA-256.
    rng = random.Random(5)
    b = DatabaseBuilder()
    for i in range(20000):
        b.add_expression(f"www.listed{i}.{rng.choice(['com', 'net', 'co.uk'])}/x/", 0x01)
    b.write(tmp_path / "u.db")
    with UrlDatabase(tmp_path / "u.db") as db:
        hosts = [f"www.new{i}.{rng.choice(['com', 'net', 'co.uk'])}" for i in range(5000)]
        before = db.exact_host_checks
        assert not any(db.check_url(f"http://{h}/login.php") for h in hosts)
        assert not any(db.check_host(h) for h in hosts)
        assert db.exact_host_checks - before < 0.02 * 2 * len(hosts)
        assert (
            db.check_url("http://www.listed7.com/x/") is not None
            or db.check_url("http://www.listed7.net/x/")
            or db.check_url("http://www.listed7.co.uk/x/")
        )


@pytest.mark.parametrize("old", [1, 2])  # 2: one category byte, before content categories
def test_old_format_version_is_a_clear_error(small_db: Path, old: int) -> None:
    data = bytearray(small_db.read_bytes())
    data[8:10] = old.to_bytes(2, "little")
    small_db.write_bytes(bytes(data))
    with pytest.raises(
        UrlDatabaseError, match=rf"format version {old}, this vmshield reads 3 \(rebuild"
    ):
        UrlDatabase(small_db)
    small_db.write_bytes(bytes(data[:80]))  # a whole version 1 header is shorter than ours
    with pytest.raises(UrlDatabaseError, match=f"format version {old}"):
        UrlDatabase(small_db)


@pytest.mark.parametrize("field_offset", [12, 13])  # chain filter bits, host filter bits
@pytest.mark.parametrize("value", [0, 2, 27, 255])
def test_filter_sizes_out_of_range_are_corrupt(
    small_db: Path, field_offset: int, value: int
) -> None:
    data = bytearray(small_db.read_bytes())
    data[field_offset] = value
    small_db.write_bytes(bytes(data))
    with pytest.raises(UrlDatabaseError, match="corrupt URL database header"):
        UrlDatabase(small_db)


def test_flipped_filter_bit_is_a_checksum_error(small_db: Path) -> None:
    data = bytearray(small_db.read_bytes())
    meta_len = int.from_bytes(data[16:20], "little")
    data[len(data) - meta_len - 1] ^= 0x01  # last byte of the host filter
    small_db.write_bytes(bytes(data))
    with pytest.raises(UrlDatabaseError, match="checksum mismatch"):
        UrlDatabase(small_db)


def _resealed(data: bytearray) -> bytes:
    """A crafted file: the body changed and its checksum recomputed (the header's last 36 bytes
    are the SHA-256 and padding)."""
    digest = hashlib.sha256(bytes(data[HEADER_SIZE:])).digest()
    data[HEADER_SIZE - 36 : HEADER_SIZE - 4] = digest
    return bytes(data)


def test_crafted_index_and_metadata_are_clear_errors(small_db: Path) -> None:
    good = small_db.read_bytes()
    bad_index = bytearray(good)
    bad_index[HEADER_SIZE : HEADER_SIZE + 4] = (7).to_bytes(4, "little")  # fine so far
    bits = bad_index[10]
    last = HEADER_SIZE + 4 * (1 << bits)
    bad_index[last : last + 4] = (123456).to_bytes(4, "little")  # total != entries
    small_db.write_bytes(_resealed(bad_index))
    with pytest.raises(UrlDatabaseError, match="corrupt URL database index"):
        UrlDatabase(small_db)
    meta_len = int.from_bytes(good[16:20], "little")
    for meta in (b"[" * meta_len, (b"[1" + b" " * meta_len)[:meta_len]):
        data = bytearray(good)
        data[len(data) - meta_len :] = meta
        small_db.write_bytes(_resealed(data))
        with pytest.raises(UrlDatabaseError, match="corrupt URL database metadata"):
            UrlDatabase(small_db)


def test_crafted_index_out_of_bounds_does_not_break_lookups(tmp_path: Path) -> None:
    b = DatabaseBuilder()
    for i in range(300):
        b.add_expression(f"h{i}.example/", 0x01)
    b.write(tmp_path / "u.db")
    data = bytearray((tmp_path / "u.db").read_bytes())
    bits = data[10]
    for bucket in range(1 << bits):  # every bucket claims entries up to 0xFFFFFF00
        at = HEADER_SIZE + 4 * bucket
        data[at : at + 4] = (0xFFFFFF00 if bucket % 2 else 0).to_bytes(4, "little")
    (tmp_path / "u.db").write_bytes(_resealed(data))
    with UrlDatabase(tmp_path / "u.db") as db:
        for i in range(300):
            db.check_url(f"http://h{i}.example/")  # answers may be wrong, never an IndexError
            db.lookup_expression(f"x{i}.example/")
