"""Fuzz the DNS parser (UDP message and TCP framing): only DnsError, bounded work."""

from __future__ import annotations

from tests.fuzz._harness import main
from vmshield.engines.net.app.dns import DnsError, DnsTcpParser, parse_message


def TestOneInput(data: bytes) -> None:
    try:
        m = parse_message(data)
    except DnsError:
        pass
    else:
        m.eve()
        assert len(m.answers) <= 256 and len(m.authorities) <= 256
    p = DnsTcpParser()
    for k in range(0, len(data), 7):
        for msg in p.feed(data[k : k + 7]):
            msg.eve()


if __name__ == "__main__":
    main(TestOneInput)
