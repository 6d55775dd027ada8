"""Prometheus metrics of one center replica (counters) plus database-wide gauges read at scrape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select


class _DbCollector:
    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from vmshield.center.db import Deployment, EventRow

        with self.store.sessions() as s:
            events = GaugeMetricFamily("vmshield_center_events_stored", "Events in the database")
            events.add_metric([], float(s.scalar(select(func.count()).select_from(EventRow)) or 0))
            yield events
            deps = GaugeMetricFamily(
                "vmshield_center_deployments", "SVM deployments by state", labels=["state"]
            )
            for state, n in s.execute(
                select(Deployment.state, func.count()).group_by(Deployment.state)
            ):
                deps.add_metric([state], float(n))
            yield deps
            hosts = self.store.hosts_status(s)
            unhealthy = GaugeMetricFamily(
                "vmshield_center_hosts_without_healthy_svm", "Hosts with no healthy SVM"
            )
            unhealthy.add_metric([], float(sum(1 for h in hosts if not h["healthy"])))
            yield unhealthy
            vms = GaugeMetricFamily(
                "vmshield_center_vms", "VMs by file protection status", labels=["status"]
            )
            nodes = self.store.all_nodes(s)
            assigns = self.store.assignments(s)
            counts: dict[str, int] = {}
            for n in nodes.values():
                if n.kind == "vm":
                    st = self.store.effective(s, n.id, nodes, assigns)["file"]["status"]
                    counts[st] = counts.get(st, 0) + 1
            for st, c in counts.items():
                vms.add_metric([st], float(c))
            yield vms


class Metrics:
    def __init__(self, store: Any) -> None:
        self.registry = CollectorRegistry()
        self.ingested = Counter(
            "vmshield_center_events_ingested",
            "Events accepted (new ids)",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "vmshield_center_events_duplicate",
            "Events ignored because their id was already stored",
            registry=self.registry,
        )
        self.rejected = Counter(
            "vmshield_center_events_rejected",
            "Events refused as malformed",
            registry=self.registry,
        )
        self.exported = Counter(
            "vmshield_center_events_exported",
            "Events shipped to SIEM exporters",
            ["exporter"],
            registry=self.registry,
        )
        self.logins_failed = Counter(
            "vmshield_center_logins_failed", "Failed console logins", registry=self.registry
        )
        self.request_seconds = Histogram(
            "vmshield_center_request_seconds",
            "API request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.registry.register(_DbCollector(store))  # type: ignore[arg-type]
        self.started = time.time()

    def render(self) -> bytes:
        return generate_latest(self.registry)
