"""Fuzz the .hdb/.hsb/.fp/.sfp line parser: any text is a signature or a SigError, never a crash."""

from __future__ import annotations

from vmshield.engines.file.signatures.clamav import SigError, SkipSig, parse_hash


def TestOneInput(data: bytes) -> None:
    line = data.decode("latin-1")
    for allow in (("md5",), ("sha1", "sha256")):
        try:
            sig = parse_hash(line, allow=allow)
        except (SigError, SkipSig):
            continue
        assert sig.kind in allow and len(sig.digest) in (32, 40, 64)
        assert sig.size is None or sig.size >= 0
