"""Suricata rule language: parsing, variables, classification, detection, prefilter.

Interface to the packet pipeline (engine.py). Stable; additive changes only.

Loading::

    rs = RuleSet.load(paths=[...], texts=[...], variables=Variables.default(),
                      classification=Classification.default())
    rs.stats      -> LoadStats(loaded, rejected, files)   (the load summary)
    rs.rejected   -> [RuleError(file, line, sid, keyword, reason)]  (never half-loaded)
    RuleSet.load(..., threshold_config=PATH)   global suppress / threshold / rate_filter
    RuleSet.load(..., selection=RuleSelection(exclude_classtypes=..., report_only=...))
                                               a policy's choice (rs.stats.left_out, .report_only)
    RuleSet.from_suricata_yaml(PATH)           rule-files, classification, threshold-file, vars
    rs.warnings, rs.pcre_timeouts, rs.datasets.snapshot(name)   (for logs, stats, state files)

Detection, once per packet (after decode, defrag, flow, stream and app-layer)::

    ctx = InspectContext(packet=p, direction="to_server" | "to_client" | None,
                         established=bool, flow_state=flow.detect  # a FlowDetectState or None
                         stream=bytes | None, buffers={"http.uri": b"/x", ...},
                         app_proto="http" | "dns" | "tls" | ... | None, tx_id=int | None,
                         stream_bytes_toserver=int, stream_bytes_toclient=int,
                         flow_pkts_toserver=..., flow_pkts_toclient=..., flow_bytes_toserver=...,
                         flow_bytes_toclient=..., flow_start=...,  # optional: flow.* keywords
                         events=["stream.pkt_retransmission", "http.request_field_too_long"])
                                         # optional: stream-event / app-layer-event keywords
    alerts = rs.match(ctx)   -> list[Alert] (after flowbits/flowint/thresholds, ordered as
                                 Suricata orders signatures: pass, drop, reject, alert)

A packet without app-layer buffers can be screened first, before a context is built (most
packets have no fast-pattern hit): `cands = rs.packet_candidates(p, stream)`; `[]` means no
alert is possible, otherwise `rs.match_candidates(ctx, cands)` is `rs.match(ctx)`.

What the pipeline provides:

- `FlowDetectState`: the rule engine's per-flow store (flowbits, flowints, per-transaction
  "already alerted" marks). The pipeline creates one per flow (`FlowDetectState()`), keeps it on
  its flow object and passes it back with every packet of that flow; `None` for packets without a
  flow (then flowbits never match and `flow:established` fails).
- `stream`: the reassembled stream data to inspect with this packet (TCP), or `None`; payload
  rules inspect `stream` when it is given (unless `flow:no_stream`/`dsize`) and the packet
  payload otherwise. Give each stream byte once (plus any overlap wanted) so that content is not
  reported twice. For ICMP the packet payload starts at byte 4 of the ICMP header (as the decoder
  produces it); rules see Suricata's ICMP payload (after the 8-byte header).
- `buffers`: app-layer buffers of the current transaction, keyed by Suricata's sticky-buffer names
  (BUFFER_NAMES below): bytes, or for multi-buffers (dns.query with several questions,
  http headers by name are not multi) a list of bytes. Missing = the rule does not match. An
  app-layer rule is inspected in the direction its buffers belong to (request buffers with
  direction to_server, response buffers with to_client) and once per (tx_id, sid) on a flow.
- `app_proto`: the flow's detected application protocol ("http", "dns", "tls", "ssh", ...,
  "failed" or None while unknown) for `alert http ...` headers and `app-layer-protocol`.

`Alert` carries sid, gid, rev, msg, action, classtype, category (the classification
description), severity (priority: 1 highest), metadata ({key: [values]}), references, target,
`tx_id` (set for app-layer rules: the engine already reports those once per transaction, so
the pipeline must not de-duplicate them per stream window) and `silent` (a drop/reject rule past
its threshold, or a noalert drop/reject: apply the verdict, log no alert); other `noalert`
rules are never returned (they only set flowbits). A matching `pass` rule ends inspection of the
packet: it is returned alone (action "pass", silent) and nothing after it applies. The pipeline turns alerts into EVE
`alert` events and verdicts (drop/reject -> drop the packet / reset).

RuleSet.match keeps threshold and dataset state inside the RuleSet (bounded tables); it is not
thread-safe, like the rest of the sans-IO engine.
"""

from __future__ import annotations

from vmshield import native

native.extend(__path__, __name__)  # compiled modules first (vmshield/native.py)

from .classification import Classification  # noqa: E402 - after native.extend
from .model import (  # noqa: E402 - after native.extend
    BUFFER_NAMES,
    Alert,
    FlowDetectState,
    InspectContext,
    LoadStats,
    RuleError,
)
from .ruleset import RuleSet  # noqa: E402 - after native.extend
from .select import RuleSelection  # noqa: E402 - after native.extend
from .variables import Variables  # noqa: E402 - after native.extend

__all__ = [
    "BUFFER_NAMES",
    "Alert",
    "Classification",
    "FlowDetectState",
    "InspectContext",
    "LoadStats",
    "RuleError",
    "RuleSelection",
    "RuleSet",
    "Variables",
]
