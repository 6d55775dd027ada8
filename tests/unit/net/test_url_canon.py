"""Safe Browsing canonicalization and expressions: the examples of Google's specification.

Vectors from developers.google.com/safe-browsing/v4/urls-hashing ("Canonicalization" and
"Suffix/prefix expressions"), kept as data and run on every change.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmshield.engines.net.urls.canon import (
    MAX_URL_LENGTH,
    UrlError,
    _canonical_host,
    canonical_host,
    canonicalize,
    host_expressions,
    split_url,
    url_expressions,
)

GOOGLE_CANONICALIZATION = [
    ("http://host/%25%32%35", "http://host/%25"),
    ("http://host/%25%32%35%25%32%35", "http://host/%25%25"),
    ("http://host/%2525252525252525", "http://host/%25"),
    ("http://host/asdf%25%32%35asd", "http://host/asdf%25asd"),
    ("http://host/%%%25%32%35asd%%", "http://host/%25%25%25asd%25%25"),
    ("http://www.google.com/", "http://www.google.com/"),
    (
        "http://%31%36%38%2e%31%38%38%2e%39%39%2e%32%36/%2E%73%65%63%75%72%65/%77%77%77%2E%65%62%61%79%2E%63%6F%6D/",
        "http://168.188.99.26/.secure/www.ebay.com/",
    ),
    (
        "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx=hgplmcx/",
        "http://195.127.0.11/uploads/%20%20%20%20/.verify/.eBaysecure=updateuserdataxplimnbqmn-xplmvalidateinfoswqpcmlx=hgplmcx/",
    ),
    (
        "http://host%23.com/%257Ea%2521b%2540c%2523d%2524e%25f%255E00%252611%252A22%252833%252944_55%252B",
        "http://host%23.com/~a!b@c%23d$e%25f^00&11*22(33)44_55+",
    ),
    ("http://3279880203/blah", "http://195.127.0.11/blah"),
    ("http://www.google.com/blah/..", "http://www.google.com/"),
    ("www.google.com/", "http://www.google.com/"),
    ("www.google.com", "http://www.google.com/"),
    ("http://www.evil.com/blah#frag", "http://www.evil.com/blah"),
    ("http://www.GOOgle.com/", "http://www.google.com/"),
    ("http://www.google.com.../", "http://www.google.com/"),
    ("http://www.google.com/foo\tbar\rbaz\n2", "http://www.google.com/foobarbaz2"),
    ("http://www.google.com/q?", "http://www.google.com/q?"),
    ("http://www.google.com/q?r?", "http://www.google.com/q?r?"),
    ("http://www.google.com/q?r?s", "http://www.google.com/q?r?s"),
    ("http://evil.com/foo#bar#baz", "http://evil.com/foo"),
    ("http://evil.com/foo;", "http://evil.com/foo;"),
    ("http://evil.com/foo?bar;", "http://evil.com/foo?bar;"),
    (b"http://\x01\x80.com/", "http://%01%80.com/"),
    ("http://notrailingslash.com", "http://notrailingslash.com/"),
    ("http://www.gotaport.com:1234/", "http://www.gotaport.com/"),
    ("  http://www.google.com/  ", "http://www.google.com/"),
    ("http:// leadingspace.com/", "http://%20leadingspace.com/"),
    ("http://%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("%20leadingspace.com/", "http://%20leadingspace.com/"),
    ("https://www.securesite.com/", "https://www.securesite.com/"),
    ("http://host.com/ab%23cd", "http://host.com/ab%23cd"),
    ("http://host.com//twoslashes?more//slashes", "http://host.com/twoslashes?more//slashes"),
]


@pytest.mark.parametrize(("url", "expected"), GOOGLE_CANONICALIZATION)
def test_google_canonicalization_examples(url: str | bytes, expected: str) -> None:
    assert canonicalize(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Host rules of the specification beyond the listed examples.
        ("http://0x7f.1/", "http://127.0.0.1/"),  # hex and fewer than four parts
        ("http://0300.0250.0.1/", "http://192.168.0.1/"),  # octal
        ("http://[2001:0db8:0000::1]/", "http://[2001:db8::1]/"),
        ("http://[::ffff:1.2.3.4]/", "http://1.2.3.4/"),  # IPv4-mapped
        ("http://[64:ff9b::1.2.3.4]/", "http://1.2.3.4/"),  # NAT64
        ("http://user:pw@Evil.COM:8080/a", "http://evil.com/a"),
        ("http://bücher.example/", "http://xn--bcher-kva.example/"),  # IDN to Punycode
        ("http://example.com/a/./b/../c", "http://example.com/a/c"),
        ("http://example.com/%2e%2e/x", "http://example.com/x"),
        ("http://256.1.1.1/", "http://256.1.1.1/"),  # not an address: a name
    ],
)
def test_host_and_path_rules(url: str, expected: str) -> None:
    assert canonicalize(url) == expected


def test_no_host_is_an_error_naming_the_url() -> None:
    with pytest.raises(UrlError, match="no host"):
        canonicalize("http:///path")


def test_expressions_google_example_with_query() -> None:
    assert url_expressions("http://a.b.c/1/2.html?param=1") == [
        "a.b.c/1/2.html?param=1",
        "a.b.c/1/2.html",
        "a.b.c/",
        "a.b.c/1/",
        "b.c/1/2.html?param=1",
        "b.c/1/2.html",
        "b.c/",
        "b.c/1/",
    ]


def test_expressions_google_example_long_host() -> None:
    # b.c.d.e.f.g is skipped: only the last five components, and the full host.
    assert url_expressions("http://a.b.c.d.e.f.g/1.html") == [
        "a.b.c.d.e.f.g/1.html",
        "a.b.c.d.e.f.g/",
        "c.d.e.f.g/1.html",
        "c.d.e.f.g/",
        "d.e.f.g/1.html",
        "d.e.f.g/",
        "e.f.g/1.html",
        "e.f.g/",
        "f.g/1.html",
        "f.g/",
    ]


def test_expressions_google_example_ip_host() -> None:
    assert url_expressions("http://1.2.3.4/1/") == ["1.2.3.4/1/", "1.2.3.4/"]


def test_expressions_at_most_four_path_prefixes_and_thirty_in_all() -> None:
    exprs = url_expressions("http://a.b.c.d.e.f.g.h/1/2/3/4/5/6.html?q=1")
    assert "a.b.c.d.e.f.g.h/1/2/3/" in exprs
    assert "a.b.c.d.e.f.g.h/1/2/3/4/" not in exprs
    assert len(exprs) == 30 and len(set(exprs)) == 30


def test_host_expressions_for_dns_and_sni() -> None:
    assert host_expressions("WWW.Evil.Example.COM.") == [
        "www.evil.example.com/",
        "evil.example.com/",
        "example.com/",
    ]


def test_google_hash_example() -> None:
    # The specification's example: the SHA-256 of "abc" starts with ba7816bf.
    assert hashlib.sha256(b"abc").digest()[:4].hex() == "ba7816bf"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Names that look plain but end in a hex or decimal IPv4 part are addresses.
        ("http://0xff/", "http://0.0.0.255/"),
        ("http://1.0xab/", "http://1.0.0.171/"),
        ("http://10.0x1/x", "http://10.0.0.1/x"),
        ("http://a.0x1f/", "http://a.0x1f/"),  # "a" is no IPv4 part: a name
        ("http://my_host.example/", "http://my_host.example/"),
    ],
)
def test_plain_looking_hosts(url: str, expected: str) -> None:
    assert canonicalize(url) == expected
    assert canonicalize(url.encode()) == expected


_host_label = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=6) | st.sampled_from(
    ["0x1f", "0xff", "0", "017", "255", "1a", "x"]
)


@settings(max_examples=500, deadline=None)
@given(labels=st.lists(_host_label, min_size=1, max_size=6), escape=st.booleans())
def test_canonical_host_fast_path_is_the_full_algorithm(labels: list[str], escape: bool) -> None:
    raw = ".".join(labels)
    if escape:  # the same host, escaped: the full algorithm only
        raw = "".join(f"%{ord(c):02x}" if c in "ab." else c for c in raw)
    assert canonical_host(raw) == _canonical_host(raw)
    assert canonical_host(raw.lower()) == _canonical_host(raw.lower())


def test_long_url_is_cut_like_bytes() -> None:
    # The str fast path must cut at MAX_URL_LENGTH as the full algorithm does for bytes.
    url = "http://" + "a" * (MAX_URL_LENGTH - 10) + "bcdefghijklmnop.com/x"
    assert split_url(url) == split_url(url.encode())
    assert canonicalize(url).startswith("http://" + "a" * 100)
    assert canonicalize(url) == canonicalize(url.encode())
