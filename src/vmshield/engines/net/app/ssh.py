"""SSH identification strings ("SSH-2.0-OpenSSH_9.6 comment"), one per direction (RFC 4253 §4.2)."""

from __future__ import annotations

from typing import Any, Final

MAX_BANNER: Final = 255  # RFC 4253: the identification line is at most 255 bytes


class SshState:
    __slots__ = ("client", "server", "buf_ts", "buf_tc", "logged", "error")

    def __init__(self) -> None:
        self.client: tuple[bytes, bytes] | None = None  # (proto version, software version)
        self.server: tuple[bytes, bytes] | None = None
        self.buf_ts = b""
        self.buf_tc = b""
        self.logged = False
        self.error = ""

    def feed(self, data: bytes, toserver: bool) -> bool:
        """True when this call completed the direction's identification line."""
        if (self.client if toserver else self.server) is not None:
            return False
        buf = (self.buf_ts if toserver else self.buf_tc) + data[: MAX_BANNER + 2]
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > MAX_BANNER:
                self.error = "identification line longer than 255 bytes"
                buf = b""
            if toserver:
                self.buf_ts = buf
            else:
                self.buf_tc = buf
            return False
        line = buf[:nl].rstrip(b"\r")
        if toserver:
            self.buf_ts = b""
        else:
            self.buf_tc = b""
        if not line.startswith(b"SSH-"):
            self.error = "not an SSH identification line"
            return False
        proto, _, rest = line[4:].partition(b"-")
        software = rest.split(b" ", 1)[0]
        if toserver:
            self.client = (proto, software)
        else:
            self.server = (proto, software)
        return True

    def buffers(self, toserver: bool) -> dict[str, bytes]:
        side = self.client if toserver else self.server
        if side is None:
            return {}
        return {"ssh.proto": side[0], "ssh.software": side[1]}

    def eve(self) -> dict[str, Any]:
        """Suricata's EVE `ssh` object."""
        out: dict[str, Any] = {}
        for name, side in (("client", self.client), ("server", self.server)):
            if side is not None:
                out[name] = {
                    "proto_version": side[0].decode("ascii", "replace"),
                    "software_version": side[1].decode("ascii", "replace"),
                }
        return out
