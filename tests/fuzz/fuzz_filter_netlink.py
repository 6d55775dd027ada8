"""Fuzz the filter's trust boundary with the kernel: nfnetlink datagrams as the NFQUEUE client
splits and parses them, and the TCP view the active responses build on. Never raises; every
parsed packet's fields stay within what the bytes can hold."""

from __future__ import annotations

try:
    import atheris

    with atheris.instrument_imports(include=["vmshield.filter"]):
        from vmshield.filter import nfqueue
        from vmshield.filter.inject import TcpView
except ImportError:
    from vmshield.filter import nfqueue
    from vmshield.filter.inject import TcpView


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    for _mtype, _seq, body in nfqueue._split(data):
        pkt = nfqueue._parse_packet(body)
        if pkt is not None:
            assert len(pkt.payload) <= len(data)
            assert len(pkt.hwaddr) <= 8
            assert 0 <= pkt.vlan < 4096
            TcpView.parse(pkt.payload)
    view = TcpView.parse(data)
    if view is not None:
        assert view.payload_len <= len(data)
