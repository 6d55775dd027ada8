"""Fuzz message decoding directly (msgpack bodies with arbitrary structure): every accepted
message respects the protocol's bounds."""

from __future__ import annotations

from vmshield.transport import protocol as p


def TestOneInput(data: bytes) -> None:
    try:
        msg = p.decode(data)
    except p.ProtocolError:
        return
    if isinstance(msg, p.ScanRequest):
        assert msg.path.startswith("/") and len(msg.path) <= p.MAX_PATH and "\x00" not in msg.path
        assert len(msg.sha256) == 64 and 0 <= msg.size <= p.MAX_FILE
    elif isinstance(msg, p.Content):
        assert len(msg.data) <= p.CHUNK
    elif isinstance(msg, p.Hello):
        assert len(msg.info.addresses) <= p.MAX_ADDRESSES and len(msg.token) <= 512
