"""The wire protocol: frames, schemas, bounds on every field a guest controls."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmshield.transport import protocol as p
from vmshield.transport.endpoints import VMADDR_CID_HOST, parse_endpoint

SHA = hashlib.sha256(b"x").hexdigest()

MESSAGES = [
    p.Hello(
        versions=[1],
        info=p.VmInfo(machine_id="m", hostname="h", addresses=["10.0.0.1"]),
        token="t" * 20,
    ),
    p.Welcome(
        version=1, vm="vm1", db_version="abc", max_inflight=8, failure_mode="closed", deadline=2.5
    ),
    p.InfoUpdate(info=p.VmInfo(hostname="new")),
    p.ScanRequest(id=3, path="/srv/a b.txt", sha256=SHA, size=10, kind="exec"),
    p.NeedContent(id=3),
    p.Content(id=3, offset=0, data=b"\x00\xff" * 10, final=True),
    p.Verdict(
        id=3,
        status="infected",
        action="quarantine",
        db_version="v",
        detections=[p.Detection(name="Eicar", inner_path="a.zip//x")],
    ),
    p.DbVersion(db_version="v2"),
    p.ScanOrder(order=1, paths=["/home"]),
    p.OrderProgress(order=1, files=10, done=True),
    p.Notice(state="fail_open", count=2, detail="late"),
    p.Ping(seq=1),
    p.Pong(seq=1),
    p.Error(code="auth", message="no"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_roundtrip_every_message(msg: p.Message) -> None:
    dec = p.FrameDecoder()
    assert dec.feed(p.encode(msg)) == [msg]


def test_frames_split_anywhere_and_many_per_read() -> None:
    stream = b"".join(p.encode(m) for m in MESSAGES)
    for cut in range(0, len(stream), 7):
        dec = p.FrameDecoder()
        out = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert out == MESSAGES


def test_oversized_frame_refused_from_its_header() -> None:
    dec = p.FrameDecoder(max_frame=1000)
    with pytest.raises(p.ProtocolError, match="exceeds the 1000-byte limit"):
        dec.feed((1001).to_bytes(4, "big"))  # refused before any body byte arrives


def _raw(obj: dict) -> bytes:  # type: ignore[type-arg]
    return msgspec.msgpack.encode(obj)


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        ({"type": "scan", "id": 1, "path": "rel/path", "sha256": SHA, "size": 1}, "absolute path"),
        ({"type": "scan", "id": 1, "path": "/a", "sha256": "ABC", "size": 1}, "sha256"),
        ({"type": "scan", "id": 1, "path": "/a", "sha256": SHA, "size": -1}, "scan.size"),
        ({"type": "scan", "id": 1, "path": "/a\x00b", "sha256": SHA, "size": 1}, "NUL"),
        (
            {"type": "scan", "id": 1, "path": "/" + "a" * 5000, "sha256": SHA, "size": 1},
            "scan.path",
        ),
        ({"type": "scan", "id": -5, "path": "/a", "sha256": SHA, "size": 1}, "scan.id"),
        ({"type": "scan", "id": 1, "path": "/a", "sha256": SHA, "size": 1, "kind": "rm"}, "kind"),
        ({"type": "content", "id": 1, "offset": 0, "data": b"x" * (p.CHUNK + 1)}, "chunk limit"),
        ({"type": "hello", "versions": [], "info": {}}, "versions"),
        ({"type": "hello", "versions": [1], "info": {}, "token": "a b"}, "token"),
        ({"type": "hello", "versions": [1], "info": {"addresses": ["1"] * 65}}, "addresses"),
        ({"type": "hello", "versions": [1], "info": {"hostname": "h" * 300}}, "hostname"),
        ({"type": "nosuch"}, "invalid message"),
        ({"type": "scan", "id": "1", "path": "/a", "sha256": SHA, "size": 1}, "invalid message"),
    ],
)
def test_bad_fields_are_named(obj: dict, why: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(p.ProtocolError, match=why):
        p.decode(_raw(obj))


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(p.ProtocolError, match="undecodable"):
        p.decode(b"\xc1\xc1")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_either_decode_or_raise_protocol_error(data: bytes) -> None:
    dec = p.FrameDecoder(max_frame=4096)
    try:
        for msg in dec.feed(data):
            p.validate(msg)
    except p.ProtocolError:
        pass


def test_version_negotiation() -> None:
    assert p.negotiate([1, 7]) == 1
    with pytest.raises(p.ProtocolError, match="no common protocol version"):
        p.negotiate([2, 3])


def test_encode_refuses_oversized_message() -> None:
    with pytest.raises(p.ProtocolError, match="frame limit"):
        p.encode(p.Content(id=1, offset=0, data=b"x" * (p.MAX_FRAME + 1)))


def test_endpoints() -> None:
    assert parse_endpoint("unix:/run/x.sock").path == "/run/x.sock"
    ep = parse_endpoint("tcp://127.0.0.1:7470")
    assert (ep.scheme, ep.host, ep.port) == ("tcp", "127.0.0.1", 7470)
    assert parse_endpoint("tcp://[::1]:1").host == "::1"
    assert parse_endpoint("vsock://host:7470").cid == VMADDR_CID_HOST
    assert parse_endpoint("vsock://3:7470").cid == 3
    for bad, why in [
        ("tcp://:1", "missing host"),
        ("tcp://h:x", "HOST:PORT"),
        ("tcp://h:70000", "out of range"),
        ("vsock://abc:1", "CID"),
        ("http://x", "expected unix"),
        ("unix:", "socket path"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_endpoint(bad)
