"""What every inventory provider offers, and how the center opens one from its settings.

A provider keeps one connection to its source (vCenter, libvirt, a TOML file). `snapshot()` is
the whole inventory as it is now; `wait_for_change(timeout)` blocks until the source reports a
change (vSphere property collector updates, libvirt lifecycle events, a file's mtime) and says
whether one came, so the sync loop re-reads only then.
"""

from __future__ import annotations

from typing import Any, Protocol

from vmshield.integration.inventory import InventoryNode

PROVIDER_KINDS = ("vsphere", "libvirt", "static")


class ProviderError(Exception):
    """The source cannot be reached or answered something we cannot use; the message says which."""


class Provider(Protocol):
    kind: str

    def snapshot(self) -> list[InventoryNode]: ...

    def wait_for_change(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


def open_provider(kind: str, settings: dict[str, Any], secret: str | None = None) -> Provider:
    """Open a provider. `settings` are the connection's stored settings; `secret` its password.

    vsphere: {"url": "https://vc.example/sdk", "user": "...", "verify_tls": true, "ca_file": ...}
    libvirt: {"uri": "qemu:///system"}  (tests use "test:///default")
    static:  {"path": "/etc/vmshield/inventory.toml"}
    """
    if kind == "vsphere":
        from vmshield.integration.vsphere import VSphereProvider

        return VSphereProvider(
            url=_required(settings, "url", kind),
            user=str(settings.get("user", "")),
            password=secret or "",
            verify_tls=bool(settings.get("verify_tls", True)),
            ca_file=settings.get("ca_file"),
        )
    if kind == "libvirt":
        from vmshield.integration.libvirt_provider import LibvirtProvider

        return LibvirtProvider(uri=_required(settings, "uri", kind))
    if kind == "static":
        from vmshield.integration.static import StaticProvider

        return StaticProvider(path=_required(settings, "path", kind))
    raise ProviderError(
        f"unknown inventory provider kind {kind!r} (known: {', '.join(PROVIDER_KINDS)})"
    )


def _required(settings: dict[str, Any], key: str, kind: str) -> str:
    value = settings.get(key)
    if not isinstance(value, str) or not value:
        raise ProviderError(f"{kind} connection needs a non-empty {key!r} setting")
    return value
