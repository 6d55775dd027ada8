"""Text carriers: MIME mail (base64, quoted-printable, uuencode), uuencoded files, BinHex 4.0,
and HTML with base64 `data:` URIs."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
from collections.abc import Iterator
from email.message import Message

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names

_MAIL_HEADERS = re.compile(
    rb"^(received|from|to|subject|date|message-id|mime-version|content-type|return-path|delivered-to|x-[\w-]+):",
    re.I | re.M,
)
_UU_BEGIN = re.compile(rb"^begin(?:-base64)? [0-7]{3,4} ([^\r\n]+)\r?$", re.M)
_BINHEX = b"(This file must be converted with BinHex"
_DATA_URI = re.compile(
    rb"data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,\"'\s]*)*);base64,([A-Za-z0-9+/=\s%]+)", re.I
)
MAX_MIME_PARTS = 10_000
_DATA_WORD = re.compile(rb"data:", re.I)


_FIELD = re.compile(rb"^[!-9;-~]+:")  # RFC 5322 field name, then a colon


def _is_mail(head: bytes) -> bool:
    """Headers from the first line to a blank line, two of them ones mail always has.

    Strict on purpose: source code and notes that merely start with "from" or "Subject:" are not
    mail, and calling them mail would turn every parser complaint into a scan error."""
    if b"\x00" in head:
        return False
    sep = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=-1)
    if sep <= 0:
        return False
    lines = head[:sep].replace(b"\r\n", b"\n").split(b"\n")
    if re.match(rb"^From \S+", lines[0]):  # mbox separator line
        lines = lines[1:]
    if not lines or not _FIELD.match(lines[0]):
        return False
    for line in lines:
        if not (_FIELD.match(line) or line[:1] in (b" ", b"\t")):
            return False
    return len(_MAIL_HEADERS.findall(b"\n".join(lines))) >= 2


def detect(head: bytes, data: bytes) -> str | None:
    if _BINHEX in head:
        return "binhex"
    low = head.lower()
    if _is_mail(head):
        return "mime"
    if _UU_BEGIN.search(head) and b"\x00" not in head:
        return "uuencode"
    if (
        b"<html" in low or b"<!doctype html" in low or b"<body" in low or b"<img" in low
    ) and _DATA_WORD.search(data):
        return "html"
    return None


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    head = data[:4096]
    kind = detect(head, data)
    if kind == "binhex":
        yield from _binhex(data, budget)
    elif kind == "mime":
        yield from _mime(data, budget)
    elif kind == "uuencode":
        yield from _uuencode(data, budget)
    elif kind == "html":
        yield from _html(data, budget)


def _check(budget: ScanBudget, size: int) -> None:
    budget.check_time()
    cap = member_cap(budget)
    if size > cap:
        raise LimitExceeded("max_file_size", f"member of {size} bytes > {cap}")


def _mime(data: bytes, budget: ScanBudget) -> Iterator[Member]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    uniq = unique_names()
    n = 0
    for part in msg.walk():
        budget.check_time()
        n += 1
        if n > MAX_MIME_PARTS:
            raise LimitExceeded("max_files", f"more than {MAX_MIME_PARTS} MIME parts")
        if part.is_multipart():
            continue
        yield from _mime_part(part, n, uniq, budget)


def _mime_part(part: Message, n: int, uniq: object, budget: ScanBudget) -> Iterator[Member]:
    fname = part.get_filename() or part.get_param("name") or ""
    if not isinstance(fname, str):
        fname = str(fname)
    ctype = part.get_content_type()
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    raw = part.get_payload(decode=False)
    if not isinstance(raw, str):
        return
    _check(budget, len(raw))
    try:
        decoded = part.get_payload(decode=True) or b""
    except Exception as exc:  # noqa: BLE001
        yield Member(sanitize_name(fname, f"part{n}"), None, error=f"undecodable part: {exc}")
        return
    payload = decoded if isinstance(decoded, bytes) else b""
    err = None
    if cte == "base64":
        # email's decoder drops stray characters silently: say so, they can hide a payload's shape.
        try:
            base64.b64decode(re.sub(r"\s+", "", raw), validate=True)
        except (binascii.Error, ValueError):
            err = "base64 part has invalid characters (decoded leniently)"
    name = sanitize_name(fname, f"part{n}.{ctype.split('/')[-1] or 'bin'}")
    yield Member(uniq(name), payload, error=err)  # type: ignore[operator]
    # uuencoded blocks inside a text body, as old mailers sent attachments.
    if ctype.startswith("text/") and _UU_BEGIN.search(payload):
        yield from _uuencode(payload, budget)


def _uuencode(data: bytes, budget: ScanBudget) -> Iterator[Member]:
    uniq = unique_names()
    for m in _UU_BEGIN.finditer(data):
        budget.check_time()
        name = uniq(sanitize_name(m.group(1).strip().decode("latin-1"), "uudecoded"))
        body_start = m.end() + 1
        end = data.find(b"\nend", body_start)
        body = data[body_start : end if end >= 0 else len(data)]
        _check(budget, len(body))
        out = bytearray()
        err = None if end >= 0 else "uuencoded block without 'end' (truncated)"
        if m.group(0).startswith(b"begin-base64"):
            lines = body.split(b"\n====")[0]
            try:
                out += base64.b64decode(re.sub(rb"\s+", b"", lines))
            except (binascii.Error, ValueError) as exc:
                err = f"bad base64: {exc}"
        else:
            for line in body.splitlines():
                line = line.rstrip(b"\r")
                if not line or line in (b"`", b" "):
                    continue
                try:
                    out += binascii.a2b_uu(line)
                except binascii.Error:
                    # Some encoders pad wrongly: decode only the length the line declares.
                    try:
                        nbytes = (line[0] - 32) & 63
                        out += binascii.a2b_uu(line[: ((nbytes + 2) // 3) * 4 + 1])
                    except (binascii.Error, IndexError):
                        err = "bad uuencoded line"
                        break
        yield Member(name, bytes(out), error=err)


def _html(data: bytes, budget: ScanBudget) -> Iterator[Member]:
    uniq = unique_names()
    for n, m in enumerate(_DATA_URI.finditer(data), 1):
        budget.check_time()
        if n > budget.limits.max_files:
            raise LimitExceeded("max_files", f"more than {budget.limits.max_files} data: URIs")
        ctype = (m.group(1) or b"application/octet-stream").decode("ascii", "replace")
        b64 = re.sub(rb"\s+|%0[aAdD]", b"", m.group(3))
        _check(budget, len(b64) * 3 // 4)
        try:
            out = base64.b64decode(b64 + b"=" * (-len(b64) % 4))
        except (binascii.Error, ValueError) as exc:
            yield Member(uniq(f"data-uri-{n}"), None, error=f"bad base64 in data: URI: {exc}")
            continue
        ext = ctype.split("/")[-1]
        yield Member(uniq(f"data-uri-{n}.{ext}"), out)


# BinHex 4.0: 6-bit text encoding, then run-length (0x90), then header + data fork + resource fork.
_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_HQX_TO_B64 = bytes.maketrans(
    _HQX, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)


def _crc_binhex(data: bytes) -> int:
    # CRC-CCITT (XModem); table-driven, so no trailing zero bytes as in the bit-serial original.
    return binascii.crc_hqx(data, 0)


def _binhex(data: bytes, budget: ScanBudget) -> Iterator[Member]:
    start = data.find(b":", data.find(_BINHEX) + len(_BINHEX))
    end = data.find(b":", start + 1)
    if start < 0:
        yield Member("(binhex)", None, error="no BinHex data")
        return
    text = data[start + 1 : end if end > 0 else len(data)]
    _check(budget, len(text))
    # 6-bit decoding as base64 with BinHex's alphabet: C speed, whatever the size.
    clean = re.sub(rb"[\r\n\t ]+", b"", text)
    bad = clean.translate(None, _HQX)
    if bad:
        yield Member("(binhex)", None, error=f"invalid BinHex character {chr(bad[0])!r}")
        return
    b64 = clean.translate(_HQX_TO_B64)
    if len(b64) % 4 == 1:
        b64 = b64[:-1]  # a lone trailing character carries no whole byte
    six = base64.b64decode(b64 + b"=" * (-len(b64) % 4))
    # Run-length: 0x90 n repeats the previous byte n-1 more times; 0x90 0 is a literal 0x90.
    cap = member_cap(budget)
    out = bytearray()
    i = 0
    while True:
        j = six.find(0x90, i)
        if j < 0 or j + 1 >= len(six):
            out += six[i : j if j >= 0 else len(six)]
            break
        out += six[i:j]
        cnt = six[j + 1]
        if cnt == 0:
            out.append(0x90)
        elif out:
            out += bytes([out[-1]]) * (cnt - 1)
        i = j + 2
        if len(out) > cap:
            raise LimitExceeded("max_file_size", f"BinHex expands past {cap} bytes")
    if len(out) > cap:
        raise LimitExceeded("max_file_size", f"BinHex expands past {cap} bytes")
    budget.check_ratio(len(text), len(out))
    if not out:
        yield Member("(binhex)", None, error="empty BinHex data")
        return
    nlen = out[0]
    hdr_end = 1 + nlen + 1 + 4 + 4 + 2 + 4 + 4
    if len(out) < hdr_end + 2:
        yield Member("(binhex)", None, error="truncated BinHex header")
        return
    fname = sanitize_name(out[1 : 1 + nlen].decode("mac_roman", "replace"), "binhex")
    p = 1 + nlen + 1 + 4 + 4 + 2
    dlen = int.from_bytes(out[p : p + 4], "big")
    rlen = int.from_bytes(out[p + 4 : p + 8], "big")
    dstart = hdr_end + 2
    if out[hdr_end:dstart] != _crc_binhex(bytes(out[:hdr_end])).to_bytes(2, "big"):
        yield Member(fname, None, error="BinHex header CRC mismatch")
        return
    dfork = bytes(out[dstart : dstart + dlen])
    err = None
    if len(dfork) < dlen:
        err = "truncated BinHex data fork"
    elif out[dstart + dlen : dstart + dlen + 2] != _crc_binhex(dfork).to_bytes(2, "big"):
        err = "BinHex data fork CRC mismatch"
    yield Member(fname, dfork, error=err)
    rstart = dstart + dlen + 2
    if rlen and err is None:
        rfork = bytes(out[rstart : rstart + rlen])
        yield Member(
            fname + ".rsrc", rfork, error=None if len(rfork) == rlen else "truncated resource fork"
        )
