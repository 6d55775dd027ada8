"""What the filter asks of the network engine, and the adapter to it.

The filter needs one thing per packet: a `Decision` (what to do with the packet, which events to
report, whether to block the source in the kernel and for how long). `EngineInspector` adapts the
network engine (`vmshield.engines.net.engine.Engine`, sans-IO) to that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from vmshield.events import Event

if TYPE_CHECKING:
    from vmshield.engines.net.rules.select import RuleSelection

ACCEPT = "accept"
DROP = "drop"
RESET = "reset"  # TCP RST to both sides (also the TLS reset)
BLOCK_PAGE = "block_page"  # HTTP: answer with the block page, reset the server side
BYPASS = "bypass"  # accept, and stop queueing this flow (conntrack mark)
ACTIONS = (ACCEPT, DROP, RESET, BLOCK_PAGE, BYPASS)


@dataclass(slots=True)
class Decision:
    action: str = ACCEPT
    events: list[Event] = field(default_factory=list)
    block_src: str | None = None  # address to block in the kernel
    block_seconds: int = 0
    url: str = ""  # for the block page
    category: str = ""
    reason: str = ""
    response: bytes | None = None  # the engine's own block-page HTTP response


class Inspector(Protocol):
    def inspect(
        self, ip_packet: bytes, ts: float, iface: str = "", vlan: int = 0, linktype: int = 228
    ) -> Decision: ...


@dataclass
class InspectorSettings:
    """Everything a worker needs to build its own inspector after fork."""

    mode: str = "ips"  # ips (standard) | ids (monitoring)
    engine_config: str | None = None  # EngineConfig TOML
    rules: list[str] = field(default_factory=list)  # Suricata rule files
    # Rules a policy leaves out or makes report-only, applied as they load (None: as written).
    rule_selection: RuleSelection | None = None
    url_db: list[str] = field(default_factory=list)  # URL database/feed files
    # URL categories blocked / allowed (a policy's; None: the engine configuration's own)
    url_block: list[str] | None = None
    url_allow: list[str] | None = None
    url_trusted: list[str] | None = None  # trusted URLs and hosts (a policy's), added to its own
    # Minutes a drop/reject rule blocks the source for (a policy's IDS action: 0 = as written;
    # None: the engine configuration's own `ids.block-minutes`)
    ids_block_minutes: int | None = None
    block_seconds: int = 600
    extra: dict[str, Any] = field(default_factory=dict)


def build_inspector(settings: InspectorSettings) -> Inspector:
    from vmshield.filter.engine_adapter import EngineInspector

    return EngineInspector(settings)
