"""HTTP/1.x request and response parser, incremental over reassembled stream data.

One `HttpParser` per flow. Requests and responses are paired in order (pipelining); bodies are
delimited by Content-Length or chunked encoding (or connection close for responses) and kept up to
a limit for inspection; everything past the limit is skipped, never buffered. Every buffer is
bounded: a header block larger than `max_header` bytes is an anomaly and ends parsing of the
direction, so a hostile peer cannot make the engine hold unbounded data.
"""

from __future__ import annotations

from typing import Any, Final

_HEX: Final = b"0123456789abcdefABCDEF"

# Parser states of one direction.
S_LINE: Final = 0
S_BODY_CL: Final = 1
S_BODY_CHUNK_SIZE: Final = 2
S_BODY_CHUNK_DATA: Final = 3
S_BODY_CHUNK_END: Final = 4
S_TRAILER: Final = 5
S_BODY_CLOSE: Final = 6
S_TUNNEL: Final = 7
S_ERROR: Final = 8

EV_REQ_TOO_LONG: Final = "http.request_field_too_long"
EV_RESP_TOO_LONG: Final = "http.response_field_too_long"
EV_REQ_LINE: Final = "http.request_line_invalid"
EV_RESP_LINE: Final = "http.response_line_invalid"
EV_CHUNK: Final = "http.invalid_transfer_encoding_value_in_request"
EV_CHUNK_RESP: Final = "http.invalid_transfer_encoding_value_in_response"
EV_CL: Final = "http.invalid_content_length_field_in_request"
EV_CL_RESP: Final = "http.invalid_content_length_field_in_response"
EV_TOO_MANY_TX: Final = "http.too_many_transactions"
EV_UNSOLICITED: Final = "http.unsolicited_response"


_ALWAYS: Final = frozenset(
    {
        "http.method",
        "http.uri",
        "http.uri.raw",
        "http.protocol",
        "http.request_line",
        "http.stat_code",
        "http.stat_msg",
        "http.response_line",
    }
)


class HttpTx:
    """One request/response pair."""

    __slots__ = (
        "tx_id",
        "method",
        "uri_raw",
        "uri",
        "protocol",
        "host",
        "host_raw",
        "user_agent",
        "req_headers",
        "req_body",
        "req_body_len",
        "resp_protocol",
        "status",
        "status_msg",
        "resp_headers",
        "resp_body",
        "resp_body_len",
        "request_done",
        "response_done",
        "logged",
        "inspected",
        "_req_first",
        "_resp_first",
    )

    def __init__(self, tx_id: int) -> None:
        self.tx_id = tx_id
        self.method = b""
        self.uri_raw = b""
        self.uri = b""
        self.protocol = b""
        self.host = b""
        self.host_raw = b""
        self.user_agent = b""
        self.req_headers: list[tuple[bytes, bytes]] = []
        self.req_body = bytearray()
        self.req_body_len = 0
        self.resp_protocol = b""
        self.status = 0
        self.status_msg = b""
        self.resp_headers: list[tuple[bytes, bytes]] = []
        self.resp_body = bytearray()
        self.resp_body_len = 0
        self.request_done = False
        self.response_done = False
        self.logged = False
        self.inspected = 0  # detection progress marker owned by the detectors
        # Header name (lower case) -> first value, made on first lookup from the header list
        # it was made of (compared by identity: the list is replaced, never edited).
        self._req_first: tuple[list[tuple[bytes, bytes]], dict[bytes, bytes]] | None = None
        self._resp_first: tuple[list[tuple[bytes, bytes]], dict[bytes, bytes]] | None = None

    def req_header(self, name: bytes) -> bytes:
        """The value of the first request header called `name` (any case), b"" if none."""
        return self._req_values().get(name.lower(), b"")

    def resp_header(self, name: bytes) -> bytes:
        return self._resp_values().get(name.lower(), b"")

    def _req_values(self) -> dict[bytes, bytes]:
        self._req_first = c = _first_values_of(self._req_first, self.req_headers)
        return c[1]

    def _resp_values(self) -> dict[bytes, bytes]:
        self._resp_first = c = _first_values_of(self._resp_first, self.resp_headers)
        return c[1]

    def buffers(self, toserver: bool = True) -> dict[str, bytes]:
        """The sticky buffers of Suricata's HTTP keywords for this transaction.

        Request buffers for the request direction, response buffers for the response direction
        (as Suricata's keywords are bound to one direction), so a rule fires once per tx.
        """
        if not toserver:
            return self._response_buffers()
        # Each header block and header lookup once: a request's buffers are built for every
        # transaction when rules are loaded.
        first = self._req_values()
        norm = _header_block(self.req_headers, normalised=True)
        raw = _header_block(self.req_headers, normalised=False)
        line = self.method + b" " + self.uri_raw + b" " + self.protocol
        b: dict[str, bytes] = {
            "http.method": self.method,
            "http.uri": self.uri,
            "http.uri.raw": self.uri_raw,
            "http.protocol": self.protocol,
            "http.host": self.host,
            "http.host.raw": self.host_raw,
            "http.user_agent": self.user_agent,
            "http.header": norm,
            "http.header.raw": raw,
            "http.request_header": norm,
            "http.cookie": first.get(b"cookie", b""),
            "http.referer": first.get(b"referer", b""),
            "http.content_type": first.get(b"content-type", b""),
            "http.request_line": line,
            "http.start": line + b"\r\n" + raw + b"\r\n",
            "http.request_body": bytes(self.req_body),
            "http.accept": first.get(b"accept", b""),
            "http.accept_lang": first.get(b"accept-language", b""),
            "http.accept_enc": first.get(b"accept-encoding", b""),
            "http.connection": first.get(b"connection", b""),
            "http.content_len": first.get(b"content-length", b""),
        }
        # A header that is absent is a missing buffer (the rule does not match), not b"".
        return {k: v for k, v in b.items() if v or k in _ALWAYS}

    def _response_buffers(self) -> dict[str, bytes]:
        b: dict[str, bytes] = {}
        if self.status:
            first = self._resp_values()
            norm = _header_block(self.resp_headers, normalised=True)
            code = str(self.status).encode()
            body = bytes(self.resp_body)
            b = {
                "http.stat_code": code,
                "http.stat_msg": self.status_msg,
                "http.server": first.get(b"server", b""),
                "http.response_header": norm,
                "http.header": norm,
                "http.header.raw": _header_block(self.resp_headers, normalised=False),
                "http.content_type": first.get(b"content-type", b""),
                "http.location": first.get(b"location", b""),
                "http.response_body": body,
                "http.response_line": self.resp_protocol + b" " + code + b" " + self.status_msg,
                "file.data": body,
            }
        return {k: v for k, v in b.items() if v or k in _ALWAYS}

    def eve(self) -> dict[str, Any]:
        """The `http` object of Suricata's EVE http and alert events."""
        out: dict[str, Any] = {}
        if self.host:
            out["hostname"] = _s(self.host)
            _, sep, port = self.host_raw.rpartition(b":")
            if sep and port.isdigit() and b"]" not in port and len(port) <= 5:
                out["http_port"] = int(port)
        out["url"] = _s(self.uri_raw)
        if self.user_agent:
            out["http_user_agent"] = _s(self.user_agent)
        ct = self.resp_header(b"content-type")
        if ct:
            out["http_content_type"] = _s(ct)
        ref = self.req_header(b"referer")
        if ref:
            out["http_refer"] = _s(ref)
        out["http_method"] = _s(self.method)
        out["protocol"] = _s(self.protocol)
        if self.status:
            out["status"] = self.status
        loc = self.resp_header(b"location")
        if loc:
            out["redirect"] = _s(loc)
        out["length"] = self.resp_body_len
        if self.req_body_len:
            out["request_body_length"] = self.req_body_len
        return out


def _s(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _first_values(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Header name (lower case) -> the value of its first occurrence, as `req_header` finds."""
    out: dict[bytes, bytes] = {}
    for k, v in headers:
        name = k.lower()
        if name not in out:
            out[name] = v
    return out


def _first_values_of(
    cached: tuple[list[tuple[bytes, bytes]], dict[bytes, bytes]] | None,
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], dict[bytes, bytes]]:
    """`cached` while it was made from this very header list, else a new (list, map) pair."""
    if cached is not None and cached[0] is headers:
        return cached
    return headers, _first_values(headers)


def _header_block(headers: list[tuple[bytes, bytes]], *, normalised: bool) -> bytes:
    if not headers:
        return b""
    if normalised:
        # Suricata's http.header: "Name: value\r\n" lines, Cookie left to http.cookie.
        return b"".join(k + b": " + v + b"\r\n" for k, v in headers if k.lower() != b"cookie")
    return b"".join(k + b": " + v + b"\r\n" for k, v in headers)


def normalise_uri(raw: bytes) -> bytes:
    """libhtp-style normalisation: percent-decoding of the path and removal of dot segments."""
    path, sep, query = raw.partition(b"?")
    if path.startswith((b"http://", b"https://")):
        # Absolute form (proxies): the path starts after the authority.
        rest = path.split(b"//", 1)[1]
        slash = rest.find(b"/")
        path = rest[slash:] if slash >= 0 else b"/"
    path = _pct_decode(path)
    # Without a "." segment, an absolute path is what _remove_dots would return.
    if b"/." in path:
        path = _remove_dots(path)
    return path + sep + _pct_decode(query) if sep else path


def _pct_decode(b: bytes) -> bytes:
    if b"%" not in b:
        return b
    out = bytearray()
    i, n = 0, len(b)
    while i < n:
        c = b[i]
        if c == 0x25 and i + 3 <= n:
            h = b[i + 1 : i + 3]
            if len(h) == 2 and h[0] in _HEX and h[1] in _HEX:
                out.append(int(h, 16))
                i += 3
                continue
        out.append(c)
        i += 1
    return bytes(out)


def _remove_dots(path: bytes) -> bytes:
    segs = path.split(b"/")
    out: list[bytes] = []
    for s in segs[1:]:
        if s == b".":
            continue
        if s == b"..":
            if out:
                out.pop()
            continue
        out.append(s)
    res = b"/" + b"/".join(out)
    if segs[-1] in (b".", b"..") and not res.endswith(b"/"):
        res += b"/"
    return res


def _blank_line(buf: bytes | bytearray) -> tuple[int, int]:
    """Start and end of the first blank line (`\r?\n\r?\n`, the end of a header block), or
    (-1, -1): what re.search of that pattern finds (the first line feed followed by an optional
    CR and a line feed), with two substring searches. The regex tried a match at every byte of
    a segment, a third of the HTTP parser's time."""
    crlf = buf.find(b"\n\r\n")
    lf = buf.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return -1, -1
    if lf < 0 or 0 <= crlf < lf:
        i, end = crlf, crlf + 3
    else:
        i, end = lf, lf + 2
    return (i - 1 if i > 0 and buf[i - 1] == 0x0D else i), end


def _parse_headers(block: bytes) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for line in block.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:
            # Obsolete line folding: continuation of the previous value.
            k, v = headers[-1]
            headers[-1] = (k, v + b" " + line.strip())
            continue
        k, sep, v = line.partition(b":")
        if not sep:
            headers.append((line.strip(), b""))
            continue
        headers.append((k.strip(), v.strip()))
    return headers


class _Dir:
    __slots__ = ("buf", "state", "remaining", "tx", "body_limit", "closed")

    def __init__(self, body_limit: int) -> None:
        self.buf = bytearray()
        self.state = S_LINE
        self.remaining = 0
        self.tx: HttpTx | None = None
        self.body_limit = body_limit
        self.closed = False


class HttpParser:
    """Both directions of one HTTP connection. `feed()` returns the transactions it advanced."""

    def __init__(
        self,
        *,
        request_body_limit: int = 100 * 1024,
        response_body_limit: int = 100 * 1024,
        max_header: int = 64 * 1024,
        max_tx: int = 256,
    ) -> None:
        self.req = _Dir(request_body_limit)
        self.resp = _Dir(response_body_limit)
        self.max_header = max_header
        self.max_tx = max_tx
        self.txs: list[HttpTx] = []  # transactions not yet answered, oldest first
        self.next_tx = 0
        self.events: list[str] = []
        self.resp_index = 0  # index into txs of the transaction awaiting its response
        self.overflow: list[HttpTx] = []  # transactions dropped unanswered (max_tx), to log

    # -- requests ------------------------------------------------------------------------

    def feed(self, data: bytes, toserver: bool) -> list[HttpTx]:
        """Parse more stream data; returns transactions whose request headers completed,
        whose request body completed, or whose response completed in this call."""
        touched: list[HttpTx] = []
        d = self.req if toserver else self.resp
        if d.state in (S_ERROR, S_TUNNEL):
            return touched
        if d.state == S_BODY_CL and not d.buf:
            # Body bytes straight from the segment, not through the buffer (three copies).
            take = min(d.remaining, len(data))
            self._body(d, toserver, data[:take] if take < len(data) else data, touched)
            d.remaining -= take
            if d.remaining:
                return touched
            self._msg_done(d, toserver, touched)
            data = data[take:]
            if not data:
                return touched
        d.buf += data
        # Bounded: every pass consumes at least one byte or stops.
        for _ in range(len(d.buf) + 2):
            if not d.buf and d.state != S_LINE:
                break
            if d.state == S_LINE:
                if not d.buf:
                    break
                if not self._line(d, toserver, touched):
                    break
            elif d.state == S_BODY_CL:
                take = min(d.remaining, len(d.buf))
                self._body(d, toserver, bytes(d.buf[:take]), touched)
                del d.buf[:take]
                d.remaining -= take
                if d.remaining == 0:
                    self._msg_done(d, toserver, touched)
                elif not d.buf:
                    break
            elif d.state == S_BODY_CLOSE:
                self._body(d, toserver, bytes(d.buf), touched)
                d.buf.clear()
                break
            elif d.state == S_BODY_CHUNK_SIZE or d.state == S_BODY_CHUNK_END:
                nl = d.buf.find(b"\n")
                if nl < 0:
                    if len(d.buf) > 1024:
                        self._error(d, toserver, EV_CHUNK if toserver else EV_CHUNK_RESP)
                    break
                line = bytes(d.buf[:nl]).strip()
                del d.buf[: nl + 1]
                if d.state == S_BODY_CHUNK_END:
                    d.state = S_BODY_CHUNK_SIZE
                    if line:
                        self._error(d, toserver, EV_CHUNK if toserver else EV_CHUNK_RESP)
                        break
                    continue
                size_s = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_s, 16)
                    if size < 0 or len(size_s) > 16:
                        raise ValueError
                except ValueError:
                    self._error(d, toserver, EV_CHUNK if toserver else EV_CHUNK_RESP)
                    break
                if size == 0:
                    d.state = S_TRAILER
                else:
                    d.remaining = size
                    d.state = S_BODY_CHUNK_DATA
            elif d.state == S_BODY_CHUNK_DATA:
                take = min(d.remaining, len(d.buf))
                self._body(d, toserver, bytes(d.buf[:take]), touched)
                del d.buf[:take]
                d.remaining -= take
                if d.remaining == 0:
                    d.state = S_BODY_CHUNK_END
                elif not d.buf:
                    break
            elif d.state == S_TRAILER:
                end = _blank_line(b"\r\n" + d.buf)[1] if d.buf[:1] not in (b"\r", b"\n") else -1
                if d.buf.startswith(b"\r\n") or d.buf.startswith(b"\n"):
                    del d.buf[: 2 if d.buf.startswith(b"\r\n") else 1]
                    self._msg_done(d, toserver, touched)
                elif end >= 0:
                    del d.buf[: end - 2]
                    self._msg_done(d, toserver, touched)
                else:
                    if len(d.buf) > self.max_header:
                        self._error(d, toserver, EV_REQ_TOO_LONG if toserver else EV_RESP_TOO_LONG)
                    break
            else:
                break
        return touched

    def _error(self, d: _Dir, toserver: bool, ev: str) -> None:
        self.events.append(ev)
        d.state = S_ERROR
        d.buf.clear()

    def _line(self, d: _Dir, toserver: bool, touched: list[HttpTx]) -> bool:
        # Tolerate empty lines between messages (RFC 9112 §2.2).
        while d.buf[:2] == b"\r\n" or d.buf[:1] == b"\n":
            del d.buf[: 2 if d.buf[:1] == b"\r" else 1]
        if not d.buf:
            return False
        start, end = _blank_line(d.buf)
        if start < 0:
            if len(d.buf) > self.max_header:
                self._error(d, toserver, EV_REQ_TOO_LONG if toserver else EV_RESP_TOO_LONG)
            return False
        head = bytes(d.buf[:start])
        del d.buf[:end]
        first, _, rest = head.partition(b"\n")
        first = first.rstrip(b"\r")
        headers = _parse_headers(rest)
        if toserver:
            return self._request(d, first, headers, touched)
        return self._response(d, first, headers, touched)

    def _request(
        self, d: _Dir, line: bytes, headers: list[tuple[bytes, bytes]], touched: list[HttpTx]
    ) -> bool:
        parts = line.split(b" ")
        parts = [p for p in parts if p]
        if len(parts) < 2 or not parts[0].isalpha():
            self._error(d, True, EV_REQ_LINE)
            return False
        if len(self.txs) >= self.max_tx:
            # Too many unanswered requests: give up on the oldest (handed to the caller in
            # `overflow` to be logged) rather than stop parsing, which would blind the rules.
            self.events.append(EV_TOO_MANY_TX)
            old = self.txs.pop(0)
            if self.resp_index > 0:
                self.resp_index -= 1
            self.overflow.append(old)
        tx = HttpTx(self.next_tx)
        self.next_tx += 1
        tx.method = parts[0]
        tx.uri_raw = parts[1]
        tx.protocol = parts[2] if len(parts) > 2 else b"HTTP/0.9"
        tx.uri = normalise_uri(tx.uri_raw)
        tx.req_headers = headers
        host = tx.req_header(b"host")
        if not host and tx.uri_raw.startswith((b"http://", b"https://")):
            host = tx.uri_raw.split(b"//", 1)[1].split(b"/", 1)[0]
        tx.host_raw = host
        tx.host = _norm_host(host)
        tx.user_agent = tx.req_header(b"user-agent")
        self.txs.append(tx)
        d.tx = tx
        touched.append(tx)
        te = tx.req_header(b"transfer-encoding").lower()
        cl = tx.req_header(b"content-length")
        if b"chunked" in te:
            d.state = S_BODY_CHUNK_SIZE
        elif cl:
            self._length_body(d, cl, True, touched)
        else:
            self._msg_done(d, True, touched)
        if tx.method == b"CONNECT":
            d.state = S_TUNNEL
        return True

    def _response(
        self, d: _Dir, line: bytes, headers: list[tuple[bytes, bytes]], touched: list[HttpTx]
    ) -> bool:
        proto, _, rest = line.partition(b" ")
        code, _, msg = rest.partition(b" ")
        if not proto.startswith(b"HTTP/") or not code.isdigit() or len(code) != 3:
            self._error(d, False, EV_RESP_LINE)
            return False
        status = int(code)
        if 100 <= status < 200 and status != 101:
            return True  # interim response: the final one follows, same transaction
        if self.resp_index < len(self.txs):
            tx = self.txs[self.resp_index]
        else:
            # A response nobody asked for (or the request was not seen): its own transaction.
            self.events.append(EV_UNSOLICITED)
            if len(self.txs) >= self.max_tx:
                self._error(d, False, EV_TOO_MANY_TX)
                return False
            tx = HttpTx(self.next_tx)
            self.next_tx += 1
            tx.request_done = True
            self.txs.append(tx)
        self.resp_index += 1
        tx.resp_protocol = proto
        tx.status = status
        tx.status_msg = msg.strip()
        tx.resp_headers = headers
        d.tx = tx
        te = tx.resp_header(b"transfer-encoding").lower()
        cl = tx.resp_header(b"content-length")
        if tx.method == b"HEAD" or status in (204, 304):
            self._msg_done(d, False, touched)
        elif status == 101 or (tx.method == b"CONNECT" and 200 <= status < 300):
            self._msg_done(d, False, touched)
            d.state = S_TUNNEL
            self.req.state = S_TUNNEL
        elif b"chunked" in te:
            d.state = S_BODY_CHUNK_SIZE
        elif cl:
            self._length_body(d, cl, False, touched)
        else:
            d.state = S_BODY_CLOSE  # ends when the connection closes
        return True

    def _body(self, d: _Dir, toserver: bool, chunk: bytes, touched: list[HttpTx]) -> None:
        tx = d.tx
        if tx is None:
            return
        body = tx.req_body if toserver else tx.resp_body
        if toserver:
            tx.req_body_len += len(chunk)
        else:
            tx.resp_body_len += len(chunk)
        room = d.body_limit - len(body)
        if room > 0:
            body += chunk[:room]
            if len(body) >= d.body_limit and tx not in touched:
                # The inspection limit is reached: inspect the body now, not at message end
                # (which may be far away, or never come for a body delimited by close).
                touched.append(tx)

    def _length_body(self, d: _Dir, cl: bytes, request: bool, touched: list[HttpTx]) -> None:
        """A body framed by Content-Length; an unusable value is an event and an empty body."""
        try:
            n = int(cl)
            if n < 0:
                raise ValueError
        except ValueError:
            self.events.append(EV_CL if request else EV_CL_RESP)
            n = 0
        if n:
            d.remaining = n
            d.state = S_BODY_CL
        else:
            self._msg_done(d, request, touched)

    def _msg_done(self, d: _Dir, toserver: bool, touched: list[HttpTx]) -> None:
        tx = d.tx
        d.state = S_LINE
        d.tx = None
        if tx is None:
            return
        if toserver:
            tx.request_done = True
        else:
            tx.response_done = True
        if tx not in touched:
            touched.append(tx)

    def end_of_response_stream(self) -> HttpTx | None:
        """The server closed its side: a body delimited by close is complete now."""
        d = self.resp
        if d.state == S_BODY_CLOSE and d.tx is not None:
            tx = d.tx
            tx.response_done = True
            d.tx = None
            d.state = S_LINE
            return tx
        return None

    def close(self) -> list[HttpTx]:
        """Connection ended: a response delimited by close is complete; return unlogged txs."""
        if self.resp.state == S_BODY_CLOSE and self.resp.tx is not None:
            self.resp.tx.response_done = True
        return [t for t in self.txs if not t.logged]

    def pop_finished(self) -> list[HttpTx]:
        """Remove and return transactions whose response is complete (oldest first)."""
        done = []
        while self.txs and self.txs[0].response_done and self.resp_index > 0:
            done.append(self.txs.pop(0))
            self.resp_index -= 1
        return done


def _norm_host(host: bytes) -> bytes:
    h = host.strip().lower()
    if h.startswith(b"["):
        end = h.find(b"]")
        return h[1:end] if end > 0 else h
    if h.count(b":") == 1:
        h = h.split(b":", 1)[0]
    return h.rstrip(b".")
