"""Benchmark of the smart storage path (issue 2). Not a test: it measures and prints.

One run, same data for every method: ``--sensors`` x ``--seconds`` 1 s frames with the
frame's 30 third-octave bands (25 Hz-20 kHz; the issue says 31, the frame definition in
``messages.bands`` has 30), on a private PostgreSQL cluster and a private Mosquitto
broker started for the run (fsync and synchronous_commit on, as in production):

(a) naive: one INSERT and one commit per message, as a straightforward consumer does
    (measured on the first ``--naive-rows`` rows: at its speed the full set takes minutes);
(b) Sonopolis' write path: ``ingestion.writer.LevelWriter`` in batches of
    ``batch_max_rows``, one commit per batch (also printed: the staging-table variant);
(c) raw binary ``COPY`` of all rows in one transaction: the practical limit;
(d) end to end: separate publisher processes (``--publishers``) send every frame as one QoS 1 MQTT
    message through Mosquitto; ``IngestService`` (validation, COPY, commit, manual
    acks, aggregate maintenance) stores them; timed from the first publish until the
    last row is committed.

The last line is exactly::

    ingest: naive_rows_s=<n> sonopolis_rows_s=<n> copy_rows_s=<n> e2e_msgs_s=<n> ratio_vs_naive=<x> fraction_of_copy=<y>
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import resource
import shutil
from collections import deque
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.config import MqttSettings  # noqa: E402
from ingestion import partitions, registry  # noqa: E402
from ingestion.metrics import IngestMetrics  # noqa: E402
from ingestion.schema import migrate  # noqa: E402
from ingestion.service import IngestService  # noqa: E402
from ingestion.settings import IngestSettings  # noqa: E402
from ingestion.validation import REASON_CODES, parse  # noqa: E402
from ingestion.writer import COLUMNS, COPY_TYPES, LevelRow, LevelWriter  # noqa: E402
from messages.bands import BAND_KEYS  # noqa: E402
from smart.db import SmartDbSettings  # noqa: E402
from sonopolis.bootstrap import bootstrap  # noqa: E402
from sonopolis.embedded import LocalMosquitto, LocalPostgres  # noqa: E402


def make_payloads(n_sensors: int, n_seconds: int, t0: datetime) -> list[tuple[str, bytes]]:
    out = []
    for s in range(n_seconds):
        t = (t0 + timedelta(seconds=s)).isoformat().replace("+00:00", "Z")
        for i in range(n_sensors):
            laeq = 45.0 + ((s * 7 + i * 13) % 400) / 10
            frame = {
                "schema": "sonopolis.level-frame/1", "sensor_id": f"b{i:05d}", "time": t, "period_s": 1.0,
                "laeq": laeq, "lafmax": laeq + 4.2, "lafmin": laeq - 3.1, "lcpeak": laeq + 17.5,
                "bands": {k: round(laeq - 12 + ((j * 3 + s) % 9) * 0.7, 1) for j, k in enumerate(BAND_KEYS)},
                "status": "ok", "sources": {"car_horn": 0, "siren": 0},
            }
            out.append((f"sonopolis/v1/levels/b{i:05d}", json.dumps(frame).encode()))
    return out


def naive(dsn: str, rows: list[LevelRow]) -> float:
    cols = ", ".join(COLUMNS)
    stmt = f"INSERT INTO smart.levels ({cols}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT DO NOTHING"
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        for row in rows:
            conn.execute(stmt, row)
            conn.commit()
        return len(rows) / (time.perf_counter() - start)


def sonopolis_path(dsn: str, rows: list[LevelRow], batch: int, direct_first: bool = True) -> float:
    with psycopg.connect(dsn) as conn:
        writer = LevelWriter(direct_first=direct_first)
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            with conn.transaction():
                writer.write(conn, rows[i:i + batch])
        return len(rows) / (time.perf_counter() - start)


def raw_copy(dsn: str, rows: list[LevelRow]) -> float:
    with psycopg.connect(dsn) as conn:
        start = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY smart.levels ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
        return len(rows) / (time.perf_counter() - start)


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE smart.levels")


def _publisher(port: int, payloads: list[tuple[str, bytes]], started: "mp.Value", index: int = 0) -> None:  # type: ignore[type-arg]
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-publisher-{index}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    with started.get_lock():
        if not started.value:
            started.value = time.time()
    # Packet ids are 16 bits: keep well under 65535 messages outstanding.
    window: deque = deque()
    for topic, body in payloads:
        if len(window) >= 30_000:
            window.popleft().wait_for_publish(120)
        window.append(client.publish(topic, body, qos=1))
    for info in window:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def end_to_end(dsn: str, port: int, payloads: list[tuple[str, bytes]], settings: IngestSettings, publishers: int = 2) -> tuple[float, float, IngestMetrics]:
    """(messages/s, ingest-process CPU seconds per message, metrics)."""
    metrics = IngestMetrics()
    service = IngestService(SmartDbSettings(dsn=dsn), settings, metrics=metrics).start()
    try:
        assert service.consumer is not None and service.consumer.subscribed.wait(20), "ingest did not subscribe"
        started = mp.Value("d", 0.0)
        cpu0 = _cpu_s()
        # Each publisher owns whole sensors (every sensor's frames stay in order).
        procs = [
            mp.get_context("fork").Process(target=_publisher, args=(port, [m for m in payloads if hash(m[0]) % publishers == k], started, k))
            for k in range(publishers)
        ]
        for proc in procs:
            proc.start()
        n = len(payloads)
        deadline = time.time() + 600
        while metrics.value("sonopolis_ingest_rows_written_total") < n and time.time() < deadline:
            time.sleep(0.01)
        done = time.time()
        cpu = _cpu_s() - cpu0
        for proc in procs:
            proc.join(60)
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM smart.levels").fetchone()[0]  # type: ignore[index]
        if stored != n:
            raise SystemExit(f"end to end stored {stored} of {n} rows")
        return n / (done - started.value), cpu / n, metrics
    finally:
        service.drain_and_stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sensors", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--naive-rows", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=5000, help="rows per write batch (IngestSettings.batch_max_rows)")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes for (d) (sensors split between them)")
    ap.add_argument("--quick", action="store_true", help="50 sensors x 120 s, 1000 naive rows")
    args = ap.parse_args()
    if args.quick:
        args.sensors, args.seconds, args.naive_rows = 50, 120, 1000
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    work = Path(tempfile.mkdtemp(prefix="sonopolis-bench-ingest-"))
    work.chmod(0o755)
    pg = LocalPostgres(work / "pg")
    broker = LocalMosquitto(work / "mqtt")
    try:
        pg.start()
        broker.start()
        dsn = bootstrap(pg.admin_dsn, "sonopolis").smart
        with psycopg.connect(dsn) as conn:
            migrate(conn)
            registry.upsert(conn, [
                registry.Sensor(sensor_id=f"b{i:05d}", name=f"bench {i}", latitude=45.43 + i * 1e-4, longitude=4.39)
                for i in range(args.sensors)
            ])
        t0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=1)
        payloads = make_payloads(args.sensors, args.seconds, t0)
        now = datetime.now(timezone.utc)
        rows: list[LevelRow] = []
        for topic, body in payloads:
            parsed = parse(topic, body, is_known=None, now=now, future_tolerance=timedelta(minutes=2))
            assert isinstance(parsed, list), parsed
            rows += parsed
        n = len(rows)
        with psycopg.connect(dsn) as conn:  # the naive consumer gets its partitions for free
            partitions.ensure(conn, {r.time.date() for r in rows})
        print(f"data: {args.sensors} sensors x {args.seconds} s = {n} frames, {len(BAND_KEYS)} bands, "
              f"{sum(len(p) for _, p in payloads) / n:.0f} B/message", flush=True)

        naive_rate = naive(dsn, rows[: args.naive_rows])
        print(f"(a) naive INSERT+commit per message: {naive_rate:,.0f} rows/s (on {min(n, args.naive_rows)} rows)", flush=True)
        truncate(dsn)
        staged_rate = sonopolis_path(dsn, rows, args.batch, direct_first=False)
        print(f"    staging table + INSERT .. ON CONFLICT (duplicate path): {staged_rate:,.0f} rows/s", flush=True)
        truncate(dsn)
        sono_rate = sonopolis_path(dsn, rows, args.batch)
        print(f"(b) sonopolis writer (binary COPY in batches of {args.batch}, commit each): {sono_rate:,.0f} rows/s", flush=True)
        truncate(dsn)
        copy_rate = raw_copy(dsn, rows)
        print(f"(c) raw binary COPY, one transaction: {copy_rate:,.0f} rows/s", flush=True)
        truncate(dsn)
        settings = IngestSettings(
            mqtt=MqttSettings(port=broker.port, client_id="bench-ingest"), metrics_port=0,
            batch_max_rows=args.batch, buffer_max_messages=60_000,
        )
        e2e_rate, cpu_per_msg, metrics = end_to_end(dsn, broker.port, payloads, settings, args.publishers)
        quarantined = sum(metrics.value("sonopolis_ingest_quarantined_total", reason=r) for r in REASON_CODES)
        print(f"(d) end to end MQTT QoS 1 -> committed rows: {e2e_rate:,.0f} msgs/s "
              f"(duplicates {metrics.value('sonopolis_ingest_duplicate_rows_total'):.0f}, quarantined {quarantined:.0f})", flush=True)
        print(f"    ingest process CPU: {cpu_per_msg * 1e6:.0f} us/message (MQTT receive + ack, validation, COPY, aggregates) "
              f"= {1 / cpu_per_msg:,.0f} msgs/s per fully available core; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores", flush=True)
        print(
            f"ingest: naive_rows_s={naive_rate:.0f} sonopolis_rows_s={sono_rate:.0f} copy_rows_s={copy_rate:.0f} "
            f"e2e_msgs_s={e2e_rate:.0f} ratio_vs_naive={sono_rate / naive_rate:.1f} fraction_of_copy={sono_rate / copy_rate:.2f}"
        )
    finally:
        broker.stop()
        pg.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
