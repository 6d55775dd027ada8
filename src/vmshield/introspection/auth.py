"""Who is this agent? A per-VM client certificate, or an enrolment token bound to the VM's identity.

Tokens file (TOML), one entry per VM:

    [[agent]]
    vm = "vm1"                 # the VM as the inventory names it
    token = "long random secret"
    uuid = "4c4c4544-..."      # optional: the DMI UUID or machine id the agent must report

A token without `uuid` is bound to the first identity that uses it (recorded in `bindings`), so a
token copied to another VM is refused.
"""

from __future__ import annotations

import hmac
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vmshield.transport import protocol as p


class AuthError(Exception):
    pass


@dataclass
class TokenEntry:
    vm: str
    token: str
    uuid: str = ""


@dataclass
class Authenticator:
    tokens: list[TokenEntry] = field(default_factory=list)
    bindings: dict[str, str] = field(default_factory=dict)  # vm -> identity first seen
    allow_certificates: bool = True

    @classmethod
    def load(cls, path: str | Path) -> Authenticator:
        try:
            obj = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise AuthError(f"{path}: {exc}") from None
        entries = []
        for i, e in enumerate(obj.get("agent", [])):
            if not isinstance(e, dict) or not e.get("vm") or not e.get("token"):
                raise AuthError(f"{path}: agent entry {i + 1} needs vm and token")
            if len(str(e["token"])) < 16:
                raise AuthError(
                    f"{path}: agent entry {i + 1} ({e['vm']}): token shorter than 16 characters"
                )
            entries.append(TokenEntry(str(e["vm"]), str(e["token"]), str(e.get("uuid", ""))))
        return cls(entries)

    @staticmethod
    def identity(info: p.VmInfo) -> str:
        return (info.dmi_uuid or info.machine_id).lower()

    def authenticate(self, hello: p.Hello, cert_cn: str | None, bind: bool = True) -> str:
        """The VM this connection belongs to; AuthError otherwise.

        With `bind=False` a first use of an unbound token does not bind it yet: the caller checks
        more (the inventory) and calls `bind` — a refused clone must not capture the token.
        """
        ident = self.identity(hello.info)
        if cert_cn is not None and self.allow_certificates:
            return cert_cn  # the CA vouched for it; TLS already verified the chain
        if not hello.token:
            raise AuthError("no client certificate and no enrolment token")
        for e in self.tokens:
            if hmac.compare_digest(e.token.encode(), hello.token.encode()):
                bound = (e.uuid or self.bindings.get(e.vm, "")).lower()
                if not ident:
                    raise AuthError(
                        f"token for {e.vm}: the agent reported no machine id or DMI UUID"
                    )
                if bound and not hmac.compare_digest(bound.encode(), ident.encode()):
                    raise AuthError(f"token for {e.vm} is bound to another machine identity")
                if bind:
                    self.bindings.setdefault(e.vm, ident)
                return e.vm
        raise AuthError("unknown enrolment token")

    def bind(self, hello: p.Hello, cert_cn: str | None, vm: str) -> None:
        """Bind a token used for the first time to the identity its agent reported."""
        if cert_cn is not None and self.allow_certificates:
            return
        ident = self.identity(hello.info)
        if ident and any(e.vm == vm for e in self.tokens):
            self.bindings.setdefault(vm, ident)
