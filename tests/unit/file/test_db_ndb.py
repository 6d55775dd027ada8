"""Extended body signatures (.ndb): ExtendedSignatures.md and BodySignatureFormat.md."""

from __future__ import annotations

import pytest
from sig_testlib import EICAR, db_of, names


def h(s: bytes) -> str:
    return s.hex()


def hit(sig: str, data: bytes, offset: str = "*", target: int = 0) -> bool:
    db = db_of(t_ndb=f"Test.Sig:{target}:{offset}:{sig}\n")
    assert not db.rejected, db.rejected
    return "Test.Sig" in names(db, data)


def test_eicar_by_plain_hex() -> None:
    assert hit(h(EICAR[:20]), b"junk" + EICAR)
    assert not hit(h(EICAR[:20]), EICAR[1:])


@pytest.mark.parametrize(
    ("sig", "good", "bad"),
    [
        # ?? matches any byte
        (h(b"abc") + "??" + h(b"def"), [b"abcXdef", b"abc\x00def"], [b"abcdef", b"abcXXdef"]),
        # a? high nibble, ?a low nibble
        (h(b"abc") + "4?" + h(b"def"), [b"abcAdef", b"abcOdef"], [b"abcadef"]),
        (h(b"abc") + "?1" + h(b"def"), [b"abcAdef", b"abcadef", b"abc1def"], [b"abcBdef"]),
        # * any number of bytes (including none)
        (h(b"abc") + "*" + h(b"def"), [b"abcdef", b"abc" + b"x" * 5000 + b"def"], [b"defabc"]),
        # {n} exactly n, {-n} at most n, {n-} at least n, {n-m} between
        (h(b"abc") + "{2}" + h(b"def"), [b"abcXYdef"], [b"abcXdef", b"abcXYZdef"]),
        (h(b"abc") + "{-2}" + h(b"def"), [b"abcdef", b"abcXdef", b"abcXYdef"], [b"abcXYZdef"]),
        (h(b"abc") + "{2-}" + h(b"def"), [b"abcXYdef", b"abc" + b"x" * 900 + b"def"], [b"abcXdef"]),
        (h(b"abc") + "{1-3}" + h(b"def"), [b"abcXdef", b"abcXYZdef"], [b"abcdef", b"abcWXYZdef"]),
        # (aa|bb) alternatives, of different lengths too
        (h(b"abc") + "(41|4243)" + h(b"def"), [b"abcAdef", b"abcBCdef"], [b"abcBdef", b"abcCdef"]),
        # !(aa|bb) any byte but those
        # (binary data: a text file is also matched lower-cased, where 'A' becomes 0x61)
        (h(b"abc") + "!(41|42)" + h(b"def"), [b"abcCdef"], [b"\x00abcAdef", b"\x00abcBdef"]),
        # HEXSIG[x-y]aa anchored byte ranges
        (h(b"abcd") + "[1-3]" + h(b"e"), [b"abcdXe", b"abcdXYZe"], [b"abcde", b"abcdWXYZe"]),
        # (B) word boundary, including the file's start and end
        ("(B)" + h(b"evil"), [b"evil", b"an evil", b"x.evil"], [b"devil"]),
        # (L) line boundary
        (h(b"evil") + "(L)", [b"evil\nx", b"evil\r\n", b"evil"], [b"evilx"]),
    ],
)
def test_wildcards(sig: str, good: list[bytes], bad: list[bytes]) -> None:
    for data in good:
        assert hit(sig, data), (sig, data)
    for data in bad:
        assert not hit(sig, data), (sig, data)


def test_offsets_absolute_floating_and_eof() -> None:
    sig = h(b"MARK")
    assert hit(sig, b"0123MARK", offset="4")
    assert not hit(sig, b"012MARK", offset="4")
    assert not hit(sig, b"01234MARK", offset="4")
    # n,MaxShift: start anywhere in [n, n+MaxShift]  (ExtendedSignatures.md: "10,5" → 10..15)
    for pad in range(10, 16):
        assert hit(sig, b"x" * pad + b"MARK", offset="10,5"), pad
    assert not hit(sig, b"x" * 9 + b"MARK", offset="10,5")
    assert not hit(sig, b"x" * 16 + b"MARK", offset="10,5")
    # EOF-n: the match starts n bytes before the end
    assert hit(sig, b"hello MARK", offset="EOF-4")
    assert hit(sig, b"hello MARK!!", offset="EOF-6")
    assert not hit(sig, b"hello MARK!!", offset="EOF-4")
    assert hit(sig, b"hello MARK!!", offset="EOF-7,2")
    assert not hit(sig, b"MA", offset="EOF-4")


def test_target_types() -> None:
    sig = h(b"PAYLOAD")
    pe = b"MZ" + b"\x00" * 62 + b"PAYLOAD"
    elf = b"\x7fELF" + b"\x00" * 12 + b"PAYLOAD"
    assert hit(sig, pe, target=1) and not hit(sig, elf, target=1)
    assert hit(sig, elf, target=6) and not hit(sig, pe, target=6)
    assert hit(sig, b"%PDF-1.4\nPAYLOAD", target=10) and not hit(sig, b"PAYLOAD", target=10)
    # Target 3 (HTML) is matched on normalised (lower-cased) text, as ClamAV does.
    page = b"<HTML><BODY>PayLoad</BODY></HTML>"
    assert hit(h(b"payload"), page, target=3)
    assert not hit(h(b"payload"), b"\x00\x01PayLoad", target=3)


def test_bad_lines_are_reported_with_line_and_reason() -> None:
    good = "Good.Sig:0:*:" + h(b"abcdef")
    bad = [
        "Bad.Fields:0:*",
        "Bad.Target:99:*:" + h(b"abcdef"),
        "Bad.Offset:0:ZZ:" + h(b"abcdef"),
        "Bad.Hex:0:*:abcg",
        "Bad.Odd:0:*:abc",
        "Bad.Jump:0:*:4142{5-2}4344",
        "Bad.Paren:0:*:4142(43|44",
        "Bad.Short:0:*:41??",
        "Bad.VI:1:VI:" + h(b"abcdef"),
    ]
    db = db_of(t_ndb="\n".join([good, *bad, good.replace("Good", "Good2")]) + "\n")
    assert db.stats["ndb"] == 2
    assert [r.line for r in db.rejected] == list(range(2, 2 + len(bad)))
    reasons = [r.reason for r in db.rejected]
    assert "fields" in reasons[0]
    assert "target" in reasons[1]
    assert "offset" in reasons[2]
    assert "'g'" in reasons[3] or "hex" in reasons[3]
    assert "odd" in reasons[4]
    assert "range" in reasons[5] or "jump" in reasons[5]
    assert "unterminated" in reasons[6]
    assert "two fixed bytes" in reasons[7]
    assert "VI" in reasons[8] and "not supported" in reasons[8]
    assert names(db, b"xabcdefx") == {"Good.Sig", "Good2.Sig"}


def test_flevel_out_of_range_is_skipped() -> None:
    db = db_of(
        t_ndb="Old.Sig:0:*:" + h(b"abcdef") + ":1:50\n" + "New.Sig:0:*:" + h(b"abcdef") + ":250\n"
    )
    assert db.stats["ndb"] == 0 and db.stats["skipped_flevel"] == 2 and not db.rejected


def test_unanchored_signature_is_still_verified() -> None:
    # No two adjacent fixed bytes: nothing to give Hyperscan, yet the signature must work.
    sig = "41??42??43??44"
    assert hit(sig, b"xxAzBzCzDxx")
    assert not hit(sig, b"xxAzBzCzExx")
