"""Fuzz the PE/ELF header reader behind EP/Sx offsets: any bytes give info or None, offsets in range."""

from __future__ import annotations

from vmshield.engines.file.signatures.execinfo import exe_info


def TestOneInput(data: bytes) -> None:
    for blob in (data, b"MZ" + data, b"\x7fELF" + data):
        info = exe_info(blob)
        if info is not None:
            assert info.entry is None or info.entry >= 0
            assert len(info.sections) <= 96
