"""Fuzz the TLS handshake parser: records from the input, JA3/JA4 computed on any hello."""

from __future__ import annotations

from tests.fuzz._harness import main
from vmshield.engines.net.app.tls import TlsError, TlsState, ja3_string, ja4, parse_hello


def TestOneInput(data: bytes) -> None:
    t = TlsState(max_handshake=4096)
    half = len(data) // 2
    for chunk, toserver in ((data[:half], True), (data[half:], False)):
        for k in range(0, len(chunk), 11):
            h = t.feed(chunk[k : k + 11], toserver)
            if h is not None:
                ja3_string(h)
                ja4(h)
    t.eve()
    t.buffers()
    assert len(t.client.hs) <= 4096 + 18432
    # The hello body parser alone, on raw bytes.
    for kind in (1, 2):
        try:
            h = parse_hello(data, kind)
        except TlsError:
            continue
        ja3_string(h)
        ja4(h)


if __name__ == "__main__":
    main(TestOneInput)
