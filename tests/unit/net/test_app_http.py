"""HTTP/1.x parser: requests, responses, pipelining, bodies (CL, chunked, close), bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmshield.engines.net.app.http import HttpParser, normalise_uri

REQ = (
    b"GET /a/b/../c%2Fd?q=%41 HTTP/1.1\r\nHost: Example.COM:8080\r\n"
    b"User-Agent: curl/8.0\r\nCookie: s=1\r\nAccept: */*\r\n\r\n"
)


def test_request_fields_and_buffers() -> None:
    h = HttpParser()
    (tx,) = h.feed(REQ, True)
    assert tx.method == b"GET" and tx.protocol == b"HTTP/1.1"
    assert tx.uri_raw == b"/a/b/../c%2Fd?q=%41"
    assert tx.uri == b"/a/c/d?q=A"
    assert tx.host == b"example.com" and tx.host_raw == b"Example.COM:8080"
    assert tx.user_agent == b"curl/8.0"
    b = tx.buffers()
    assert b"Cookie" not in b["http.header"] and b"User-Agent: curl/8.0\r\n" in b["http.header"]
    assert b"Cookie: s=1" in b["http.header.raw"]
    assert b["http.cookie"] == b"s=1"
    assert tx.request_done


def test_request_split_byte_by_byte() -> None:
    h = HttpParser()
    got = []
    for i in range(len(REQ)):
        got += h.feed(REQ[i : i + 1], True)
    assert len(got) == 1 and got[0].host == b"example.com"


def test_response_content_length_and_pairing() -> None:
    h = HttpParser()
    h.feed(REQ, True)
    h.feed(b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nab", False)
    assert h.pop_finished() == []
    h.feed(b"cde", False)
    (tx,) = h.pop_finished()
    assert tx.status == 404 and tx.status_msg == b"Not Found" and bytes(tx.resp_body) == b"abcde"
    e = tx.eve()
    assert e["status"] == 404 and e["hostname"] == "example.com" and e["length"] == 5
    assert e["http_port"] == 8080
    assert tx.buffers(False)["http.server"] == b"nginx"
    assert "http.uri" not in tx.buffers(False) and "http.server" not in tx.buffers(True)


def test_pipelining() -> None:
    h = HttpParser()
    txs = h.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n", True)
    assert [t.uri for t in txs] == [b"/1", b"/2"]
    h.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\ny",
        False,
    )
    done = h.pop_finished()
    assert [(t.uri, t.status, bytes(t.resp_body)) for t in done] == [
        (b"/1", 200, b"x"),
        (b"/2", 201, b"y"),
    ]


def test_chunked_request_and_response() -> None:
    h = HttpParser()
    h.feed(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", True)
    h.feed(b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n", True)
    tx = h.txs[0]
    assert bytes(tx.req_body) == b"Wikipedia" and tx.request_done
    h.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", False)
    (done,) = h.pop_finished()
    assert bytes(done.resp_body) == b"abc"


def test_body_limit_keeps_length_but_bounded_bytes() -> None:
    h = HttpParser(response_body_limit=10)
    h.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True)
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"z" * 1000, False)
    (tx,) = h.pop_finished()
    assert len(tx.resp_body) == 10 and tx.resp_body_len == 1000


def test_response_until_close_and_head_and_100_continue() -> None:
    h = HttpParser()
    h.feed(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.0\r\n\r\n", True)
    h.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", False)
    h.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil close", False)
    (head,) = h.pop_finished()
    assert head.method == b"HEAD" and head.status == 200 and head.resp_body_len == 0
    rest = h.close()
    assert rest[0].response_done and bytes(rest[0].resp_body) == b"until close"


def test_oversized_header_is_an_anomaly_and_bounded() -> None:
    h = HttpParser(max_header=1024)
    h.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 5000, True)
    assert "http.request_field_too_long" in h.events
    assert len(h.req.buf) == 0
    assert h.feed(b"more", True) == []


def test_garbage_request_line() -> None:
    h = HttpParser()
    h.feed(b"\x00\x01\x02 garbage\r\n\r\n", True)
    assert "http.request_line_invalid" in h.events


def test_bad_chunk_size() -> None:
    h = HttpParser()
    h.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", True)
    assert any("transfer_encoding" in e for e in h.events)


def test_uri_normalisation() -> None:
    assert normalise_uri(b"/%2e%2e/etc/passwd") == b"/etc/passwd"
    assert normalise_uri(b"http://host/x/./y") == b"/x/y"
    assert normalise_uri(b"/a%zz") == b"/a%zz"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8), st.booleans())
def test_never_raises(chunks: list[bytes], toserver: bool) -> None:
    h = HttpParser(max_header=256)
    for c in chunks:
        h.feed(b"GET / HTTP/1.1\r\n" + c if toserver else c, toserver)
        h.feed(c, not toserver)
    h.close()
    h.pop_finished()


def test_too_many_unanswered_requests_keeps_parsing() -> None:
    h = HttpParser(max_tx=4)
    got = h.feed(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(10)), True)
    assert [t.uri for t in got] == [b"/%d" % i for i in range(10)]  # every request parsed
    assert len(h.txs) == 4 and [t.uri for t in h.overflow] == [b"/%d" % i for i in range(6)]
    assert "http.too_many_transactions" in h.events
    h.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)
    assert [t.uri for t in h.pop_finished()] == [b"/6"]


def test_many_small_chunks_in_one_feed_are_all_parsed() -> None:
    h = HttpParser(request_body_limit=1 << 20)
    h.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True)
    h.feed(b"1\r\na\r\n" * 30000 + b"0\r\n\r\n", True)
    tx = h.txs[0]
    assert tx.request_done and tx.req_body_len == 30000


def test_body_is_handed_for_inspection_when_the_limit_is_reached() -> None:
    h = HttpParser(response_body_limit=100)
    h.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True)
    assert h.feed(b"HTTP/1.0 200 OK\r\n\r\n" + b"a" * 60, False) == []
    (tx,) = h.feed(b"b" * 60, False)  # close-delimited body: no end in sight, limit reached
    assert bytes(tx.buffers(False)["file.data"]) == b"a" * 60 + b"b" * 40
    assert h.feed(b"c" * 60, False) == []  # once


def test_end_of_header_block_found_as_the_pattern_defines_it() -> None:
    # The header block ends at the first `\r?\n\r?\n`: the parser looks only at line feeds
    # (_blank_line); on every arrangement of CR, LF and text it must find what the regular
    # expression finds, in bytes and in the parser's bytearray buffers.
    import itertools
    import re

    from vmshield.engines.net.app.http import _blank_line

    pattern = re.compile(rb"\r?\n\r?\n")
    for n in range(9):
        for combo in itertools.product(b"\r\na", repeat=n):
            data = bytes(combo)
            m = pattern.search(data)
            want = (m.start(), m.end()) if m else (-1, -1)
            assert _blank_line(data) == want, data
            assert _blank_line(bytearray(data)) == want, data


def test_content_length_body_split_any_way_gives_the_same_transactions() -> None:
    # Bodies framed by Content-Length are taken straight from the segment when nothing is
    # buffered: however the stream is cut, the parser must see the same bodies and messages.
    body = bytes(range(256)) * 3
    stream = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 768\r\n\r\n"
        + body
        + b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!"
    )
    req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"

    def run(cuts: list[int]) -> list[tuple[int, bytes, int]]:
        p = HttpParser()
        p.feed(req, True)
        last = 0
        for c in [*cuts, len(stream)]:
            p.feed(stream[last:c], False)
            last = c
        return [(tx.status, bytes(tx.resp_body), tx.resp_body_len) for tx in p.txs]

    whole = run([])
    assert whole == [(200, body, 768), (404, b"nope!", 5)]
    for a in range(0, len(stream), 37):
        for b in (a + 1, a + 500, len(stream) - 3):
            assert run(sorted({a, min(b, len(stream))})) == whole


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(["/", ".", "..", "a", "%2e", "%2f", "?", "x=1"]), max_size=10))
def test_uri_normalisation_skips_nothing_it_must_do(parts: list[str]) -> None:
    # Dot segments are removed only where a "/." occurs: on every path built of slashes,
    # dots, escapes and names, the result is what removing them from every absolute path
    # gives (the rule before the shortcut).
    from vmshield.engines.net.app.http import _pct_decode, _remove_dots

    raw = "".join(parts).encode()
    path, sep, query = raw.partition(b"?")
    path = _pct_decode(path)
    if path.startswith(b"/") or b"/." in path:
        path = _remove_dots(path)
    assert normalise_uri(raw) == (path + sep + _pct_decode(query) if sep else path)
