"""Application-layer parsers (HTTP/1.x, DNS, TLS) and protocol detection by content."""

from __future__ import annotations

from vmshield import native

native.extend(__path__, __name__)  # compiled modules first (vmshield/native.py)

from .detect import HTTP_METHODS, detect_tcp, detect_udp  # noqa: E402 - after native.extend

__all__ = ["HTTP_METHODS", "detect_tcp", "detect_udp"]
