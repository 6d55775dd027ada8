"""Carriers that are not archives: mail, uuencode, BinHex, HTML data URIs, RTF objects, OLE2,
PDF, TNEF, SZDD/KWAJ, and archives carved out of executables. All built by the test."""

from __future__ import annotations

import base64
import email.message
import quopri
import subprocess
from pathlib import Path

import pytest
from container_testlib import (
    EICAR,
    find_eicar,
    have,
    make_binhex,
    make_ole2,
    make_pe_with,
    make_rtf_package,
    make_tnef,
    make_zip,
    ole10native,
)

from vmshield.engines.file.containers import detect, open_container
from vmshield.engines.file.limits import Limits, ScanBudget


def members(blob: bytes, name: str = "x") -> dict[str, bytes | None]:
    it = open_container(blob, name, ScanBudget(Limits()))
    assert it is not None, "not recognised"
    return {m.name: m.data for m in it}


def test_mime_base64_and_quoted_printable_and_nested_zip() -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "invoice"
    msg.set_content("see attachments")
    msg.add_attachment(
        EICAR, maintype="application", subtype="octet-stream", filename="invoice.com"
    )
    msg.add_attachment(
        make_zip({"inner/e.com": EICAR}), maintype="application", subtype="zip", filename="docs.zip"
    )
    blob = msg.as_bytes()
    assert b"X5O!" not in blob  # really base64-encoded
    assert detect(blob) == "mime"
    assert sorted(find_eicar(blob)["found"]) == ["docs.zip//inner/e.com", "invoice.com"]
    # quoted-printable part
    qp = (
        b"From: x@example.org\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + quopri.encodestring(EICAR, quotetabs=True)
        + b"\r\n"
    )
    ms = members(qp)
    assert EICAR in next(iter(ms.values()))  # type: ignore[operator]


def test_uuencode_in_mail_body_and_alone() -> None:
    import binascii

    lines = [binascii.b2a_uu(EICAR[i : i + 45]) for i in range(0, len(EICAR), 45)]
    uu = b"begin 644 virus.com\n" + b"".join(lines) + b"`\nend\n"
    assert detect(uu) == "uuencode"
    assert members(uu) == {"virus.com": EICAR}
    mail = (
        b"From: x@example.org\nSubject: old style\nDate: Mon, 1 Jan 2001 00:00:00 +0000\n\nhi\n"
        + uu
    )
    assert "virus.com" in find_eicar(mail)["found"][0]


def test_binhex(tmp_path: Path) -> None:
    blob = make_binhex("eicar.com", EICAR + b"\x00" * 40 + b"\x90\x90", rsrc=b"RSRC")
    assert detect(blob) == "binhex"
    ms = members(blob)
    assert ms["eicar.com"] == EICAR + b"\x00" * 40 + b"\x90\x90"
    assert ms["eicar.com.rsrc"] == b"RSRC"
    if have("unar"):  # our test encoder agrees with an independent decoder
        (tmp_path / "e.hqx").write_bytes(blob)
        subprocess.run(
            ["unar", "-q", "-o", str(tmp_path / "out"), str(tmp_path / "e.hqx")],
            check=True,
            capture_output=True,
        )
        assert (tmp_path / "out" / "eicar.com").read_bytes().startswith(EICAR)


def test_binhex_corrupt_reported() -> None:
    blob = bytearray(make_binhex("a.bin", b"hello world, hello world"))
    blob[60] = ord("!") if blob[60] != ord("!") else ord("#")
    ms = list(open_container(bytes(blob), "x", ScanBudget(Limits())) or [])
    assert any(m.error for m in ms)


def test_html_data_uri() -> None:
    b64 = base64.b64encode(EICAR).decode()
    html = f'<!DOCTYPE html><html><body><p>hi</p><a href="data:application/octet-stream;base64,{b64}">x</a></body></html>'
    assert find_eicar(html.encode())["found"] == ["data-uri-1.octet-stream"]


def test_rtf_embedded_package() -> None:
    blob = make_rtf_package("payload.exe", EICAR)
    assert detect(blob) == "rtf"
    assert find_eicar(blob)["found"] == ["payload.exe"]


def test_ole2_streams_and_ole10native() -> None:
    doc = make_ole2(
        {
            "WordDocument": b"word binary " * 10,
            "ObjectPool/_123/\x01Ole10Native": ole10native("dropper.exe", EICAR),
            "Data": b"x" + EICAR,
        }
    )
    assert detect(doc) == "ole2"
    ms = members(doc)
    assert "WordDocument" in ms
    r = find_eicar(doc)
    assert "ObjectPool/_123/dropper.exe" in r["found"]


def test_ole2_inside_zip_inside_mail() -> None:
    doc = make_ole2({"Package": EICAR})
    msg = email.message.EmailMessage()
    msg["From"] = "a@example.org"
    msg["Subject"] = "x"
    msg.set_content("x")
    msg.add_attachment(
        make_zip({"a.doc": doc}), maintype="application", subtype="zip", filename="a.zip"
    )
    assert find_eicar(msg.as_bytes())["found"] == ["a.zip//a.doc//Package"]


def test_pdf_attachment_and_compressed_stream() -> None:
    import io
    import zlib

    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(100, 100)
    w.add_attachment("eicar.com", EICAR)
    b = io.BytesIO()
    w.write(b)
    assert find_eicar(b.getvalue())["found"] == ["eicar.com"]
    # A hand-written PDF whose only payload sits in a FlateDecode stream.
    body = zlib.compress(EICAR)
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [] /Count 0 >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body + b"\nendstream",
    ]
    pdf = bytearray(b"%PDF-1.4\n")
    offs = []
    for i, o in enumerate(objs, 1):
        offs.append(len(pdf))
        pdf += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % o for o in offs)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    assert find_eicar(bytes(pdf))["found"] == ["stream-3"]


def test_tnef_winmail_dat() -> None:
    blob = make_tnef({"report.doc": b"clean", "evil.com": EICAR})
    assert detect(blob) == "tnef"
    assert members(blob) == {"report.doc": b"clean", "evil.com": EICAR}
    bad = blob[:-20]
    ms = list(open_container(bad, "winmail.dat", ScanBudget(Limits())) or [])
    assert any(m.error and "truncated" in m.error for m in ms)


@pytest.mark.skipif(not have("mscompress"), reason="mscompress writes SZDD")
def test_szdd_from_mscompress(tmp_path: Path) -> None:
    body = EICAR + b" padding padding padding padding " * 50
    (tmp_path / "setup.exe").write_bytes(body)
    subprocess.run(["mscompress", "setup.exe"], cwd=tmp_path, check=True, capture_output=True)
    blob = (tmp_path / "setup.exe_").read_bytes()
    assert detect(blob) == "szdd" and len(blob) < len(body)
    assert members(blob, "setup.exe_") == {"setup.exe": body}
    assert find_eicar(blob, "setup.exe_")["found"] == ["setup.exe"]


def test_sfx_carving_from_executable() -> None:
    exe = make_pe_with(make_zip({"installer/payload.com": EICAR}))
    assert detect(exe) == "executable"
    r = find_eicar(exe)
    assert len(r["found"]) == 1 and r["found"][0].endswith(".zip//installer/payload.com")
    assert r["found"][0].startswith("sfx@0x")


def test_sfx_carving_7z(tmp_path: Path) -> None:
    from container_testlib import make_7z

    exe = make_pe_with(make_7z({"p.com": EICAR}, tmp_path))
    r = find_eicar(exe)
    assert len(r["found"]) == 1 and r["found"][0].endswith(".7z//p.com")


def test_plain_executable_yields_nothing() -> None:
    exe = make_pe_with(b"\x00" * 512)
    assert list(open_container(exe, "a.exe", ScanBudget(Limits())) or []) == []


def test_chm_uncompressed_section(tmp_path: Path) -> None:
    from container_testlib import make_chm

    blob = make_chm({"index.html": b"<html>help</html>", "img/e.com": EICAR})
    assert detect(blob) == "chm"
    assert find_eicar(blob)["found"] == ["img/e.com"]
    if have("7zz"):  # the test writer agrees with an independent reader
        (tmp_path / "a.chm").write_bytes(blob)
        subprocess.run(
            ["7zz", "x", "-bd", f"-o{tmp_path / 'x'}", str(tmp_path / "a.chm")],
            check=False,  # exits 2: no ::DataSpace list (compilers write one), yet extracts
            capture_output=True,
        )
        assert (tmp_path / "x" / "img" / "e.com").read_bytes() == EICAR


def test_chm_lzx_content_reported_not_clean() -> None:
    from container_testlib import make_chm

    ms = list(
        open_container(
            make_chm({"a.html": b"x"}, {"packed.html": 5000}), "h.chm", ScanBudget(Limits())
        )
        or []
    )
    assert [m.name for m in ms if m.data is not None] == ["a.html"]
    assert any(m.error and "LZX" in m.error for m in ms)
    bad = list(open_container(b"ITSF" + b"\x00" * 200, "h.chm", ScanBudget(Limits())) or [])
    assert bad and bad[0].error and "malformed CHM" in bad[0].error


def test_text_that_is_not_mail_is_not_treated_as_mail() -> None:
    # A clean source file must not become a "MIME" carrier (every parser complaint would be an error).
    assert detect(b"from os import path\nfrom sys import argv\n\nprint(path, argv)\n") is None
    assert detect(b"Subject: notes\nFrom: me\nno blank line, just text\n") is None
    assert detect(b"Title: x\nDate: today\n\nbody\n") is None  # one mail header only
    mbox = b"From alice@example.org Mon Jan  1 00:00:00 2001\nFrom: alice@example.org\nTo: bob@example.org\n\nhi\n"
    assert detect(mbox) == "mime"


def test_pdf_encrypted_with_a_user_password() -> None:
    import io

    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(100, 100)
    w.add_attachment("eicar.com", EICAR)
    w.encrypt("secret", algorithm="AES-128")
    b = io.BytesIO()
    w.write(b)
    ms = list(open_container(b.getvalue(), "locked.pdf", ScanBudget(Limits())) or [])
    assert any(m.encrypted for m in ms)
    assert not any(m.data and EICAR in m.data for m in ms)


def test_rtf_objdata_obfuscation_skipped_as_word_does() -> None:
    blob = make_rtf_package("payload.exe", EICAR)
    i = blob.index(b"objdata") + 20
    # Control words and an ignorable group inside the hex, as exploit kits write them.
    ob = blob[:i] + b"{\\*\\bogus 11}\\par " + blob[i:]
    assert find_eicar(ob)["found"] == ["payload.exe"]


def test_rtf_object_that_is_not_ole1_is_scanned_raw() -> None:
    rtf = b"{\\rtf1 {\\object{\\*\\objdata " + EICAR.hex().encode() + b"}}}"
    assert find_eicar(rtf)["found"] == ["object1.bin"]


def test_olevba_only_runs_on_a_vba_project(monkeypatch: pytest.MonkeyPatch) -> None:
    # olevba re-parses leniently and can spin on a crafted mini-FAT (found by fuzzing): files
    # without a VBA/dir stream never reach it.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyparsing deprecations at olevba's import
        import oletools.olevba

    calls = []
    monkeypatch.setattr(
        oletools.olevba,
        "VBA_Parser",
        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(RuntimeError),
    )
    assert members(make_ole2({"WordDocument": b"x" * 100}))
    assert calls == []
    ms = list(
        open_container(make_ole2({"Macros/VBA/dir": b"\x01" * 100}), "m.doc", ScanBudget(Limits()))
        or []
    )
    assert calls == [1] and any(m.error and "VBA" in m.error for m in ms)


def test_pdf_embedded_file_outside_the_name_tree() -> None:
    # An /EmbeddedFile stream no name tree points at, stored uncompressed: still a member.
    obj3 = b"<< /Type /EmbeddedFile /Length %d >>\nstream\n" % len(EICAR) + EICAR + b"\nendstream"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>", obj3]
    pdf = bytearray(b"%PDF-1.4\n")
    offs = []
    for i, o in enumerate(objs, 1):
        offs.append(len(pdf))
        pdf += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(pdf)
    pdf += b"xref\n0 4\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offs)
    pdf += b"trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    assert find_eicar(bytes(pdf))["found"] == ["stream-3"]
