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
        # "" = not hashed (a file over the announced size limit); any real file size is valid
        assert len(msg.sha256) in (0, 64) and 0 <= msg.size <= p.MAX_SIZE
        if msg.data is not None:  # inline content: small, exactly the size, with its hash
            assert len(msg.data) <= p.INLINE_MAX and len(msg.data) == msg.size and msg.sha256
    elif isinstance(msg, p.Content):
        assert len(msg.data) <= p.CHUNK
    elif isinstance(msg, p.Hello):
        assert len(msg.info.addresses) <= p.MAX_ADDRESSES and len(msg.token) <= 512
