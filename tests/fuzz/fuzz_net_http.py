"""Fuzz the HTTP parser: the input split into request/response chunks; buffers stay bounded."""

from __future__ import annotations

from tests.fuzz._harness import main
from vmshield.engines.net.app.http import HttpParser


def TestOneInput(data: bytes) -> None:
    h = HttpParser(request_body_limit=512, response_body_limit=512, max_header=1024, max_tx=8)
    i = 0
    while i < len(data):
        ctl = data[i]
        n = (ctl & 0x3F) + 1
        chunk = data[i + 1 : i + 1 + n]
        i += 1 + n
        for tx in h.feed(chunk, bool(ctl & 0x80)):
            tx.buffers(True)
            tx.buffers(False)
            tx.eve()
            assert len(tx.req_body) <= 512 and len(tx.resp_body) <= 512
        assert len(h.req.buf) <= 1024 + 64 + 1024 and len(h.resp.buf) <= 1024 + 64 + 1024
        assert len(h.txs) <= 8
        h.pop_finished()
    h.close()


if __name__ == "__main__":
    main(TestOneInput)
