"""The agent ↔ introspection ↔ SVM wire protocol: typed messages in length-prefixed frames.

A frame is a 4-byte big-endian length followed by one msgpack-encoded message (a tagged msgspec
struct). The same frames run over AF_VSOCK, TCP with mutual TLS and Unix sockets.

Guest input is untrusted: frames are bounded (`MAX_FRAME`), every message is decoded against its
schema, and `validate()` bounds every field (paths, hashes, counts) before anything uses it. A
peer that sends a frame that fails any of this gets an `Error` and its connection is closed.

Many requests are in flight on one connection: each carries an `id` chosen by the sender, and the
answers may come back in any order. Backpressure: `Welcome.max_inflight` is how many requests the
agent may have outstanding; the server stops reading a connection that exceeds it.
"""

from __future__ import annotations

import re
import struct
from typing import Literal

import msgspec

PROTOCOL_VERSIONS = (1,)  # versions this build speaks; Hello lists the client's, Welcome picks one
MAX_FRAME = 1024 * 1024 + 4096  # one content chunk plus its envelope
CHUNK = 1024 * 1024  # content travels in chunks of at most this many bytes
MAX_PATH = 4096
MAX_NAME = 256
MAX_ADDRESSES = 64
MAX_DETECTIONS = 32
MAX_FILE = 1024 * 1024 * 1024  # content the SVM accepts for one file (its scan limits cut earlier)
INLINE_MAX = 64 * 1024  # content sent inside a scan request
MAX_SIZE = 1 << 62  # a file size a guest may announce: any real file (content is bounded apart)
MAX_INFLIGHT = 256
_HEADER = struct.Struct(">I")
_SHA256 = re.compile(r"\A[0-9a-f]{64}\Z")
_TOKENISH = re.compile(r"\A[\x21-\x7e]{0,512}\Z")

EventKind = Literal["open", "exec", "close_write", "ondemand", "rescan", "prefetch"]
# What the agent must do. deny: refuse this access; disinfect: replace the file with the content
# that follows in `Content` messages; quarantine: the SVM holds the backup, the agent removes the
# file; delete: remove it; report: allow, the SVM has logged it; allow: clean.
Action = Literal["allow", "deny", "disinfect", "quarantine", "delete", "report"]


class ProtocolError(Exception):
    """The peer broke the protocol; the connection is closed with this reason."""


class VmInfo(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    machine_id: str = ""
    dmi_uuid: str = ""
    hostname: str = ""
    os: str = ""
    kernel: str = ""
    addresses: list[str] = []
    agent_version: str = ""


class Hello(msgspec.Struct, tag="hello", kw_only=True):
    versions: list[int]
    info: VmInfo
    token: str = ""  # enrolment token, when no client certificate identifies the VM


class Welcome(msgspec.Struct, tag="welcome", kw_only=True):
    version: int
    vm: str  # the VM as the inventory knows it
    db_version: str
    max_inflight: int
    failure_mode: Literal["open", "closed"] = "open"
    deadline: float = 3.0  # seconds the agent waits for a verdict before applying failure_mode
    on_access: list[str] = []  # which accesses to intercept: open, exec, close_write
    exclude_paths: list[str] = []  # the profile's exclusions: globs or re:REGEX
    exclude_processes: list[str] = []
    # Files larger than this are not scanned: the agent asks without hashing them (sha256 "")
    # and the profile's `unscannable` decides. 0: no limit announced (older services).
    max_size: int = 0
    inline_max: int = 0  # requests may carry content up to this size (0: never)


class InfoUpdate(msgspec.Struct, tag="info", kw_only=True):
    info: VmInfo


class ScanRequest(msgspec.Struct, tag="scan", kw_only=True):
    id: int
    path: str
    sha256: str
    size: int
    kind: EventKind = "open"
    order: int = 0  # on-demand scan order this belongs to (0: none)
    # A small file's content sent with the request (saves the NeedContent round trip on a cache
    # miss); only when the service announced `inline_max` in its welcome.
    data: bytes | None = None


class NeedContent(msgspec.Struct, tag="need", kw_only=True):
    id: int


class Content(msgspec.Struct, tag="content", kw_only=True):
    id: int
    offset: int
    data: bytes
    final: bool = False


class Detection(msgspec.Struct, kw_only=True):
    name: str
    inner_path: str = ""


class Verdict(msgspec.Struct, tag="verdict", kw_only=True):
    id: int
    status: str  # the engine's status: clean, infected, limits_exceeded, encrypted, error
    action: Action
    db_version: str
    detections: list[Detection] = []
    cached: bool = False  # answered from the shared verdict cache
    reason: str = ""


class DbVersion(msgspec.Struct, tag="db", kw_only=True):
    db_version: str  # the signature database changed: flush every clean-verdict cache


class ScanOrder(msgspec.Struct, tag="order", kw_only=True):
    order: int
    paths: list[str]


class OrderProgress(msgspec.Struct, tag="progress", kw_only=True):
    order: int
    files: int
    done: bool = False
    error: str = ""


class Notice(msgspec.Struct, tag="notice", kw_only=True):
    """Agent state worth an event: fail_open, fail_closed, recovered, overflow, rescanned."""

    state: Literal[
        "fail_open", "fail_closed", "recovered", "overflow", "rescanned", "enforce_failed"
    ]
    count: int = 0
    detail: str = ""


# --- between a separate introspection service and the SVM (both on the host, trusted peers) ---


class RelayHello(msgspec.Struct, tag="relay_hello", kw_only=True):
    versions: list[int]
    name: str = ""


class SvmWelcome(msgspec.Struct, tag="svm_welcome", kw_only=True):
    version: int
    db_version: str
    host: str


class RelayScan(msgspec.Struct, tag="relay_scan", kw_only=True):
    vm: str
    req: ScanRequest  # its id is the relay's, unique on this link


class ProfileRequest(msgspec.Struct, tag="profile_req", kw_only=True):
    vm: str


class ProfileInfo(msgspec.Struct, tag="profile", kw_only=True):
    vm: str
    failure_mode: Literal["open", "closed"]
    deadline: float
    on_access: list[str]
    exclude_paths: list[str] = []
    exclude_processes: list[str] = []


class EventMsg(msgspec.Struct, tag="event", kw_only=True):
    eve: bytes  # one EVE JSON object (the relay's agent events, for the SVM's sinks)


class HealthRequest(msgspec.Struct, tag="health_req", kw_only=True):
    seq: int


class HealthInfo(msgspec.Struct, tag="health", kw_only=True):
    seq: int
    json: bytes


class Ping(msgspec.Struct, tag="ping", kw_only=True):
    seq: int


class Pong(msgspec.Struct, tag="pong", kw_only=True):
    seq: int


class Error(msgspec.Struct, tag="error", kw_only=True):
    code: str
    message: str


Message = (
    Hello
    | Welcome
    | InfoUpdate
    | ScanRequest
    | NeedContent
    | Content
    | Verdict
    | DbVersion
    | ScanOrder
    | OrderProgress
    | Notice
    | RelayHello
    | SvmWelcome
    | RelayScan
    | ProfileRequest
    | ProfileInfo
    | EventMsg
    | HealthRequest
    | HealthInfo
    | Ping
    | Pong
    | Error
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(msg: Message) -> bytes:
    body = _encoder.encode(msg)
    if len(body) > MAX_FRAME:
        raise ProtocolError(
            f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte frame limit"
        )
    return _HEADER.pack(len(body)) + body


def decode(body: bytes) -> Message:
    """Decode one frame body and validate it; raises ProtocolError naming what was wrong."""
    try:
        msg = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"invalid message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    validate(msg)
    return msg


def _check_str(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ProtocolError(f"{field}: {len(value)} characters, limit {limit}")
    if "\x00" in value:
        raise ProtocolError(f"{field}: contains a NUL character")


def _check_id(field: str, value: int) -> None:
    if not 0 <= value < 2**63:
        raise ProtocolError(f"{field}: {value} out of range")


def validate_info(info: VmInfo) -> None:
    for name in ("machine_id", "dmi_uuid", "hostname", "os", "kernel", "agent_version"):
        _check_str(f"info.{name}", getattr(info, name), MAX_NAME)
    if len(info.addresses) > MAX_ADDRESSES:
        raise ProtocolError(f"info.addresses: {len(info.addresses)} entries, limit {MAX_ADDRESSES}")
    for a in info.addresses:
        _check_str("info.addresses[]", a, 64)


def validate(msg: Message) -> None:
    """Bounds on every field of every message (msgspec already checked the types)."""
    if isinstance(msg, Hello):
        if not 1 <= len(msg.versions) <= 16:
            raise ProtocolError("hello.versions: between 1 and 16 versions expected")
        if not _TOKENISH.match(msg.token):
            raise ProtocolError("hello.token: at most 512 printable ASCII characters")
        validate_info(msg.info)
    elif isinstance(msg, InfoUpdate):
        validate_info(msg.info)
    elif isinstance(msg, ScanRequest):
        _check_id("scan.id", msg.id)
        _check_id("scan.order", msg.order)
        _check_str("scan.path", msg.path, MAX_PATH)
        if not msg.path.startswith("/"):
            raise ProtocolError("scan.path: an absolute path expected")
        # "" only for a file over the announced size limit, never hashed (checked by the SVM)
        if msg.sha256 and not _SHA256.match(msg.sha256):
            raise ProtocolError("scan.sha256: 64 lowercase hexadecimal digits expected")
        # A guest may open a file of any size; only content is bounded (MAX_FILE, scan limit).
        if not 0 <= msg.size <= MAX_SIZE:
            raise ProtocolError(f"scan.size: {msg.size} outside 0..{MAX_SIZE}")
        if msg.data is not None and (
            len(msg.data) > INLINE_MAX or len(msg.data) != msg.size or not msg.sha256
        ):
            raise ProtocolError(
                f"scan.data: {len(msg.data)} bytes inline; at most {INLINE_MAX}, "
                "exactly the announced size, with its hash"
            )
    elif isinstance(msg, Content):
        _check_id("content.id", msg.id)
        if len(msg.data) > CHUNK:
            raise ProtocolError(f"content.data: {len(msg.data)} bytes, chunk limit {CHUNK}")
        if not 0 <= msg.offset <= MAX_FILE:
            raise ProtocolError(f"content.offset: {msg.offset} outside 0..{MAX_FILE}")
    elif isinstance(msg, NeedContent):
        _check_id("need.id", msg.id)
    elif isinstance(msg, Verdict):
        _check_id("verdict.id", msg.id)
        if len(msg.detections) > MAX_DETECTIONS:
            raise ProtocolError("verdict.detections: too many")
        _check_str("verdict.reason", msg.reason, MAX_PATH)
        _check_str("verdict.db_version", msg.db_version, MAX_NAME)
        for d in msg.detections:
            _check_str("verdict.detections[].name", d.name, MAX_NAME)
            _check_str("verdict.detections[].inner_path", d.inner_path, MAX_PATH)
    elif isinstance(msg, Welcome):
        if not 1 <= msg.max_inflight <= 65536:
            raise ProtocolError("welcome.max_inflight out of range")
        if not 0.01 <= msg.deadline <= 600:
            raise ProtocolError("welcome.deadline out of range")
        _check_str("welcome.vm", msg.vm, MAX_NAME)
        for name in ("exclude_paths", "exclude_processes"):
            items = getattr(msg, name)
            if len(items) > 4096:
                raise ProtocolError(f"welcome.{name}: at most 4096 patterns")
            for x in items:
                _check_str(f"welcome.{name}[]", x, MAX_PATH)
    elif isinstance(msg, ScanOrder):
        if len(msg.paths) > 1024:
            raise ProtocolError("order.paths: at most 1024 paths")
        for p in msg.paths:
            _check_str("order.paths[]", p, MAX_PATH)
    elif isinstance(msg, OrderProgress):
        _check_str("progress.error", msg.error, MAX_PATH)
    elif isinstance(msg, RelayScan):
        _check_str("relay_scan.vm", msg.vm, MAX_NAME)
        validate(msg.req)
    elif isinstance(msg, ProfileRequest | ProfileInfo):
        _check_str("profile.vm", msg.vm, MAX_NAME)
    elif isinstance(msg, EventMsg):
        if len(msg.eve) > 256 * 1024:
            raise ProtocolError("event.eve: larger than 256 KiB")
    elif isinstance(msg, Notice):
        _check_str("notice.detail", msg.detail, MAX_PATH)
        _check_id("notice.count", msg.count)
    elif isinstance(msg, Error):
        _check_str("error.code", msg.code, 64)
        _check_str("error.message", msg.message, MAX_PATH)
    elif isinstance(msg, DbVersion):
        _check_str("db.db_version", msg.db_version, MAX_NAME)


class FrameDecoder:
    """Sans-IO frame splitter: feed bytes, get messages. Oversized frames raise before buffering."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= 4:
            (length,) = _HEADER.unpack_from(self._buf)
            if length > self.max_frame:
                raise ProtocolError(
                    f"frame of {length} bytes exceeds the {self.max_frame}-byte limit"
                )
            if len(self._buf) < 4 + length:
                break
            body = bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            out.append(decode(body))
        return out


def negotiate(offered: list[int]) -> int:
    common = set(offered) & set(PROTOCOL_VERSIONS)
    if not common:
        raise ProtocolError(
            f"no common protocol version: peer speaks {sorted(offered)[:16]}, we speak {list(PROTOCOL_VERSIONS)}"
        )
    return max(common)
