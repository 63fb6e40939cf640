"""Prometheus metrics of the ingestion service, on an injected registry.

A registry per service instance (not the process-global default) keeps tests and
benchmarks that run several services in one process from mixing counts.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ingestion.validation import REASON_CODES


class IngestMetrics:
    """Counters and gauges named ``sonopolis_ingest_*``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("sonopolis_ingest_messages_received", "MQTT messages received", registry=r)
        self.rows_written = Counter("sonopolis_ingest_rows_written", "1 s level rows committed", registry=r)
        self.duplicates = Counter("sonopolis_ingest_duplicate_rows", "Rows already stored (redeliveries), skipped", registry=r)
        self.quarantined = Counter("sonopolis_ingest_quarantined", "Messages quarantined, by reason", ["reason"], registry=r)
        self.acked = Counter("sonopolis_ingest_messages_acked", "Messages acknowledged to the broker after commit", registry=r)
        self.db_errors = Counter("sonopolis_ingest_db_errors", "Failed write attempts (retried)", registry=r)
        self.buffer_depth = Gauge("sonopolis_ingest_buffer_messages", "Messages received but not yet committed", registry=r)
        self.lag = Gauge("sonopolis_ingest_lag_seconds", "Commit time minus the newest frame time of the last batch", registry=r)
        self.batch_seconds = Histogram(
            "sonopolis_ingest_batch_seconds", "Time to write and commit one batch", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.connected = Gauge("sonopolis_ingest_broker_connected", "1 while connected to the smart broker", registry=r)
        for reason in REASON_CODES + ("db_rejected",):
            self.quarantined.labels(reason)  # expose zeros: an absent series hides a healthy count

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:
        """Expose ``/metrics`` on ``port`` (0 = don't); return the HTTP server (``.shutdown()``)."""
        if not port:
            return None
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (tests, benchmark)."""
        v = self.registry.get_sample_value(name, labels or None)
        return float(v or 0.0)
