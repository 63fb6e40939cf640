"""Metrics are served for Prometheus; the ingest command validates its configuration."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from ingestion.metrics import IngestMetrics
from sonopolis.cli import app
from sonopolis.embedded import free_port


def test_metrics_endpoint_exposes_counters_by_reason():
    metrics = IngestMetrics()
    metrics.messages.inc(3)
    metrics.quarantined.labels("out_of_range").inc()
    metrics.lag.set(1.5)
    port = free_port()
    server = metrics.serve(port, addr="127.0.0.1")
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    assert "sonopolis_ingest_messages_received_total 3.0" in text
    assert 'sonopolis_ingest_quarantined_total{reason="out_of_range"} 1.0' in text
    assert 'sonopolis_ingest_quarantined_total{reason="unknown_sensor"} 0.0' in text, "zero series are exposed"
    assert "sonopolis_ingest_lag_seconds 1.5" in text


def test_two_services_in_one_process_keep_separate_counts():
    a, b = IngestMetrics(), IngestMetrics()
    a.rows_written.inc(5)
    assert (a.value("sonopolis_ingest_rows_written_total"), b.value("sonopolis_ingest_rows_written_total")) == (5, 0)


def test_ingest_validate_config(monkeypatch, tmp_path):
    runner = CliRunner()
    monkeypatch.delenv("SONOPOLIS_SMART_DB__DSN", raising=False)
    missing = runner.invoke(app, ["ingest", "--validate-config"])
    assert missing.exit_code == 2 and "SONOPOLIS_SMART_DB__DSN" in missing.output
    monkeypatch.setenv("SONOPOLIS_SMART_DB__DSN", "postgresql://sonopolis_smart@127.0.0.1/x")
    monkeypatch.setenv("SONOPOLIS_SMART_INGEST__BATCH_MAX_ROWS", "0")
    bad = runner.invoke(app, ["ingest", "--validate-config"])
    assert bad.exit_code == 2 and "ingest.batch_max_rows" in bad.output
    monkeypatch.setenv("SONOPOLIS_SMART_INGEST__BATCH_MAX_ROWS", "2000")
    ok = runner.invoke(app, ["ingest", "--validate-config"])
    assert ok.exit_code == 0 and "configuration OK" in ok.output
