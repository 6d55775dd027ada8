"""Every container format, built by the test, with EICAR found at the right inner path."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from container_testlib import (
    EICAR,
    bz,
    find_eicar,
    gz,
    have,
    make_7z,
    make_7zz_zip,
    make_cab,
    make_cpio,
    make_iso,
    make_rar4,
    make_tar,
    make_zip,
    xz,
)

from vmshield.engines.file.containers import Member, detect, open_container
from vmshield.engines.file.limits import Limits, ScanBudget

FILES = {"docs/readme.txt": b"nothing to see\n" * 20, "bin/eicar.com": EICAR}


def members(blob: bytes, name: str = "x") -> list[Member]:
    it = open_container(blob, name, ScanBudget(Limits()))
    assert it is not None, f"{name} not recognised as a container"
    return list(it)


@pytest.mark.parametrize(
    "method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
)
def test_zip_methods(method: int) -> None:
    blob = make_zip(FILES, method)
    assert detect(blob) == "zip"
    ms = {m.name: m for m in members(blob)}
    assert ms["bin/eicar.com"].data == EICAR and ms["bin/eicar.com"].error is None
    assert ms["docs/readme.txt"].data == FILES["docs/readme.txt"]


@pytest.mark.skipif(not have("7zz"), reason="7zz (Debian 7zip) builds deflate64 zips")
def test_zip_deflate64(tmp_path: Path) -> None:
    blob = make_7zz_zip({"a.txt": b"abc" * 5000, "eicar.com": EICAR}, tmp_path, "Deflate64")
    assert b"\x09\x00" in blob[:10]  # method 9 in the first local header
    assert find_eicar(blob)["found"] == ["eicar.com"]


def test_tar_and_compressed_tars() -> None:
    for mode in ("w", "w:gz", "w:bz2", "w:xz"):
        r = find_eicar(make_tar(FILES, mode), "a.tar")
        # A compressed tar is one level, as users name it: a.tar.gz//bin/eicar.com
        assert r["found"] == ["bin/eicar.com"], mode
        assert not r["errors"]


def test_single_streams_named_after_outer_file() -> None:
    for blob, outer, inner in (
        (gz(EICAR), "x.com.gz", "x.com"),
        (bz(EICAR), "y.bz2", "y"),
        (xz(EICAR), "z.xz", "z"),
    ):
        ms = members(blob, outer)
        assert [(m.name, m.data) for m in ms] == [(inner, EICAR)]


def test_gzip_keeps_its_stored_name() -> None:
    import gzip

    b = io.BytesIO()
    with gzip.GzipFile("orig.exe", "wb", fileobj=b) as g:
        g.write(EICAR)
    assert [m.name for m in members(b.getvalue(), "whatever.gz")] == ["orig.exe"]


def test_7z(tmp_path: Path) -> None:
    assert find_eicar(make_7z(FILES, tmp_path))["found"] == ["bin/eicar.com"]


def test_7z_encrypted_member_reported(tmp_path: Path) -> None:
    blob = make_7z(FILES, tmp_path, password="secret")
    r = find_eicar(blob)
    assert r["found"] == []
    assert "bin/eicar.com" in r["encrypted"]


@pytest.mark.skipif(not have("7zz"), reason="7zz writes ZipCrypto")
def test_zip_encrypted_member_reported(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "eicar.com").write_bytes(EICAR)
    subprocess.run(
        ["7zz", "a", "-bd", "-tzip", "-psecret", "e.zip", "eicar.com"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    ms = members((tmp_path / "e.zip").read_bytes())
    assert [(m.name, m.encrypted, m.data) for m in ms] == [("eicar.com", True, None)]


def test_rar5_written_from_the_spec(tmp_path: Path) -> None:
    from container_testlib import make_rar5

    blob = make_rar5(FILES)
    assert detect(blob) == "rar"
    assert find_eicar(blob)["found"] == ["bin/eicar.com"]
    if have("unar"):  # an independent reader agrees with the test's writer
        import subprocess

        (tmp_path / "a.rar").write_bytes(blob)
        subprocess.run(
            ["unar", "-q", "-o", str(tmp_path / "x"), str(tmp_path / "a.rar")],
            check=True,
            capture_output=True,
        )
        assert (tmp_path / "x" / "a" / "bin" / "eicar.com").read_bytes() == EICAR


def test_rar_encrypted_member_reported() -> None:
    r = find_eicar(make_rar4({"e.com": EICAR}, encrypted=True))
    assert r["encrypted"] == ["e.com"] and r["found"] == []


def test_rar4_written_from_the_spec() -> None:
    blob = make_rar4(FILES)
    assert detect(blob) == "rar"
    assert find_eicar(blob)["found"] == ["bin/eicar.com"]


@pytest.mark.skipif(not have("gcab"), reason="gcab")
def test_cab(tmp_path: Path) -> None:
    blob = make_cab(FILES, tmp_path)
    assert detect(blob) == "cab"
    assert find_eicar(blob)["found"] == ["bin/eicar.com"]


@pytest.mark.skipif(not have("arj"), reason="arj")
@pytest.mark.parametrize("method", ["-m0", "-m1", "-m2", "-m3", "-m4"])
def test_arj_methods(tmp_path: Path, method: str) -> None:
    import subprocess

    body = b"".join(b"line %d of a text that repeats\n" % (i % 97) for i in range(3000))
    (tmp_path / "t.txt").write_bytes(body)
    (tmp_path / "eicar.com").write_bytes(EICAR)
    subprocess.run(
        ["arj", "a", "-y", method, "a.arj", "t.txt", "eicar.com"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    ms = {m.name: m for m in members((tmp_path / "a.arj").read_bytes())}
    assert ms["t.txt"].data == body and ms["t.txt"].error is None
    assert ms["eicar.com"].data == EICAR


def test_arj_header_too_short_is_an_error_member_not_a_crash() -> None:
    """A basic header shorter than ARJ's fixed part (found by fuzzing: it raised IndexError)."""
    import struct
    import zlib

    def header(body: bytes) -> bytes:
        return (
            b"\x60\xea"
            + struct.pack("<H", len(body))
            + body
            + struct.pack("<I", zlib.crc32(body))
            + b"\0\0"
        )

    main = header(bytes([30]) + bytes(29) + b"a.arj\0\0")
    short = header(b"\x04\x00\xff\xff\xff\xff\xff")
    ms = list(open_container(main + short, "a.arj", ScanBudget(Limits())) or [])
    assert ms and ms[-1].data is None and "malformed ARJ header" in (ms[-1].error or "")


@pytest.mark.skipif(not have("xorriso"), reason="xorriso")
def test_iso9660(tmp_path: Path) -> None:
    blob = make_iso(FILES, tmp_path)
    assert detect(blob) == "iso9660"
    assert find_eicar(blob)["found"] == ["bin/eicar.com"]


@pytest.mark.skipif(not have("cpio"), reason="cpio")
@pytest.mark.parametrize("fmt", ["newc", "odc", "bin", "crc"])
def test_cpio_variants(tmp_path: Path, fmt: str) -> None:
    blob = make_cpio(FILES, tmp_path, fmt)
    assert detect(blob) == "cpio"
    assert find_eicar(blob)["found"] == ["bin/eicar.com"]


def test_zip_family_detected_by_content_not_extension() -> None:
    docx = make_zip(
        {
            "[Content_Types].xml": b"<Types/>",
            "word/document.xml": b"<w/>",
            "word/embeddings/x.bin": EICAR,
        }
    )
    assert find_eicar(docx, "report.pdf")["found"] == ["word/embeddings/x.bin"]
    assert open_container(b"just some text, not an archive", "a.zip", ScanBudget(Limits())) is None


def test_nested_three_deep_mixed(tmp_path: Path) -> None:
    # zip -> tar.gz -> 7z -> eicar
    seven = make_7z({"deep/eicar.com": EICAR}, tmp_path)
    tgz = make_tar({"mid/inner.7z": seven, "mid/other.txt": b"x"}, "w:gz")
    top = make_zip({"outer/b.tar.gz": tgz, "outer/a.txt": b"y"})
    assert find_eicar(top)["found"] == ["outer/b.tar.gz//mid/inner.7z//deep/eicar.com"]


@pytest.mark.skipif(not (have("cpio") and have("xorriso")), reason="cpio, xorriso")
def test_nested_iso_cpio_rar(tmp_path: Path) -> None:
    rar = make_rar4({"x/eicar.com": EICAR})
    cpio = make_cpio({"r.rar": rar}, tmp_path, "newc")
    iso = make_iso({"c.cpio": cpio}, tmp_path)
    assert find_eicar(iso)["found"] == ["c.cpio//r.rar//x/eicar.com"]


def test_several_infected_members_all_reported() -> None:
    top = make_zip({"a/e1.com": EICAR, "b.zip": make_zip({"e2.com": EICAR}), "c.txt": b"clean"})
    assert sorted(find_eicar(top)["found"]) == ["a/e1.com", "b.zip//e2.com"]


@pytest.mark.parametrize(
    ("kind", "files"),
    [
        (
            "odt",
            {
                "mimetype": b"application/vnd.oasis.opendocument.text",
                "content.xml": b"<x/>",
                "Object 1/e.bin": EICAR,
            },
        ),
        (
            "jar",
            {
                "META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n",
                "com/x/A.class": b"\xca\xfe\xba\xbe",
                "res/e.bin": EICAR,
            },
        ),
        (
            "apk",
            {
                "AndroidManifest.xml": b"\x03\x00\x08\x00",
                "classes.dex": b"dex\n035\x00",
                "assets/e.bin": EICAR,
            },
        ),
    ],
)
def test_zip_family_members(kind: str, files: dict[str, bytes]) -> None:
    # ODF stores "mimetype" first and uncompressed; JAR and APK are plain zips with their own layout.
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files.items():
            z.writestr(n, d, zipfile.ZIP_STORED if n == "mimetype" else zipfile.ZIP_DEFLATED)
    [found] = find_eicar(b.getvalue(), f"doc.{kind}")["found"]
    assert found.endswith("e.bin")
