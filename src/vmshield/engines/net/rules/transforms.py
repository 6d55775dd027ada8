"""Transforms on sticky buffers (dotprefix, url_decode, from_base64, to_sha256 ...)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from typing import Any

TRANSFORMS = {
    "dotprefix", "url_decode", "from_base64", "to_sha256", "to_md5", "to_sha1",
    "strip_whitespace", "compress_whitespace", "to_lowercase", "to_uppercase", "xor",
    "header_lowercase", "strip_pseudo_headers",
}  # fmt: skip

_WS = b" \t\r\n\x0b\x0c"
_WS_RUN = re.compile(rb"[ \t\r\n\x0b\x0c]+")
_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")


def parse_transform(name: str, value: str | None) -> tuple[Any, ...]:
    if name == "xor":
        if value is None:
            raise ValueError("xor needs a hex key")
        key = value.strip().strip('"')
        try:
            kb = binascii.unhexlify(key)
        except (binascii.Error, ValueError):
            raise ValueError(f"xor key must be hex, got '{key}'") from None
        if not kb or len(kb) > 255:
            raise ValueError("xor key length must be 1..255 bytes")
        return ("xor", kb)
    if name == "from_base64":
        nbytes, offset, mode = 0, 0, "rfc4648"
        if value:
            for part in value.split(","):
                k, _, v = part.strip().partition(" ")
                v = v.strip()
                if k == "bytes" and v.isdigit():
                    nbytes = int(v)
                elif k == "offset" and v.isdigit():
                    offset = int(v)
                elif k == "mode" and v in ("strict", "rfc4648", "rfc2045"):
                    mode = v
                else:
                    raise ValueError(f"bad from_base64 option '{part.strip()}'")
        return ("from_base64", nbytes, offset, mode)
    if value is not None:
        raise ValueError(f"{name} takes no value")
    return (name,)


def _b64(data: bytes, nbytes: int, offset: int, mode: str) -> bytes:
    d = data[offset:]
    if nbytes:
        d = d[:nbytes]
    if mode == "rfc2045":
        d = bytes(
            c
            for c in d
            if c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
        )
    else:
        # RFC 4648: decode up to the first invalid character (Suricata decodes the valid prefix)
        m = re.match(rb"[A-Za-z0-9+/]*={0,2}", d)
        d = m.group(0) if m else b""
        if mode == "strict" and len(d) != len(data[offset:][: nbytes or None]):
            return b""
    d = d.rstrip(b"=")
    d = d[: len(d) - (len(d) % 4 == 1)]  # a lone trailing sextet carries no byte
    try:
        return base64.b64decode(d + b"=" * (-len(d) % 4))
    except (binascii.Error, ValueError):
        return b""


def apply(t: tuple[Any, ...], data: bytes) -> bytes:
    n = t[0]
    if n == "dotprefix":
        return b"." + data
    if n == "url_decode":
        return _PCT.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"+", b" "))
    if n == "from_base64":
        return _b64(data, t[1], t[2], t[3])
    if n == "to_sha256":
        return hashlib.sha256(data).digest()
    if n == "to_md5":
        return hashlib.md5(data).digest()
    if n == "to_sha1":
        return hashlib.sha1(data).digest()
    if n == "strip_whitespace":
        return data.translate(None, _WS)
    if n == "compress_whitespace":
        return _WS_RUN.sub(b" ", data)
    if n in ("to_lowercase", "header_lowercase"):
        return data.lower()
    if n == "to_uppercase":
        return data.upper()
    if n == "xor":
        k = t[1]
        return bytes(b ^ k[i % len(k)] for i, b in enumerate(data))
    if n == "strip_pseudo_headers":
        return b"".join(ln for ln in data.splitlines(keepends=True) if not ln.startswith(b":"))
    raise ValueError(n)


def apply_all(ts: tuple[Any, ...], data: bytes) -> bytes:
    for t in ts:
        data = apply(t, data)
    return data


TransformFn = Callable[[bytes], bytes]
