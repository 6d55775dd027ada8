"""Protocol detection by content, not port: the first bytes of a flow direction name its
application protocol (compiled with the engine: it runs for every new flow)."""

from __future__ import annotations

from typing import Final

HTTP_METHODS: Final = (
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
    b"PATCH ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
    b"SEARCH ",
    b"REPORT ",
)


def detect_tcp(data: bytes, toserver: bool) -> str:
    """Name the protocol from the first bytes of a direction; "" when it needs more data.

    "unknown" means the bytes are enough to say it is none of ours. Ports play no part, so HTTP on
    port 53 or TLS on 8080 is recognised just the same.
    """
    if not data:
        return ""
    if data[0] == 0x16:
        if len(data) < 6:
            return ""
        if data[1] == 3 and data[2] <= 4 and data[5] in (1, 2):
            return "tls"
        return "unknown"
    if toserver:
        for m in HTTP_METHODS:
            if data.startswith(m):
                return "http"
            if len(data) < len(m) and m.startswith(data):
                return ""
    elif data.startswith(b"HTTP/1.") or (len(data) < 7 and b"HTTP/1.".startswith(data)):
        return "http" if len(data) >= 7 else ""
    if data.startswith(b"SSH-") or (len(data) < 4 and b"SSH-".startswith(data)):
        return "ssh" if len(data) >= 4 else ""
    if len(data) >= 14 and _looks_like_dns(data[2:], tcp_len=int.from_bytes(data[:2], "big")):
        return "dns"
    if len(data) < 14 and data[0] == 0:
        return ""  # maybe the DNS length prefix of a short first segment
    return "unknown"


def detect_udp(data: bytes, sport: int, dport: int) -> str:
    if _looks_like_dns(data):
        return "dns"
    return ""


def _looks_like_dns(data: bytes, tcp_len: int = -1) -> bool:
    if len(data) < 12:
        return False
    if tcp_len >= 0 and tcp_len < 12:
        return False
    flags = int.from_bytes(data[2:4], "big")
    qd = int.from_bytes(data[4:6], "big")
    an = int.from_bytes(data[6:8], "big")
    opcode = (flags >> 11) & 0xF
    z = (flags >> 6) & 1
    if opcode not in (0, 1, 2, 4, 5) or z:
        return False
    if qd != 1:
        return False  # every real query (and its answer) carries exactly one question
    if not flags & 0x8000 and an > 0 and opcode == 0:
        return False
    # The question name must be well formed: labels of 1..63 ending in a zero byte.
    i = 12
    for _ in range(128):
        if i >= len(data):
            return False
        n = data[i]
        if n == 0:
            return i + 5 <= len(data)
        if n > 63:
            return False
        i += n + 1
    return False
