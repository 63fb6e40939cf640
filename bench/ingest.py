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
(d) end to end: publisher processes (``--publishers``) send every frame as one QoS 1
    MQTT v5 message through Mosquitto; ``IngestService`` (validation, COPY, commit,
    manual acks after commit, aggregate maintenance) stores them; timed from the first
    publish until the last row is committed.

The load generator: in production each sensor publishes one message a second from
its own device, so publishing costs the server nothing. Here all sensors publish from
this 2-core machine, and a paho publisher costs ~180 us CPU per message (more than
the whole ingest service), so by default the publishers write pre-encoded MQTT v5
PUBLISH packets to a plain socket and count the broker's PUBACKs (``_raw_publisher``;
still real QoS 1 MQTT through the real broker, a few us per message).
``--paho-publishers`` also measures (d) with paho publishers, side by side.

Also printed, same data and broker: the bare ceiling MQTT publish -> subscribe
without any database (raw publisher -> stock paho subscriber acking each message, and
-> the ingest consumer's batching paho client acking per 1000), and CPU per message
of the ingest process, the broker and the publishers.

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
import select
import shutil
import statistics
import socket
import struct
import threading
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


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, b = divmod(n, 128)
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _raw_publisher(port: int, payloads: list[tuple[str, bytes]], started: "mp.Value", index: int = 0, window: int = 20_000) -> None:  # type: ignore[type-arg]
    """MQTT v5 QoS 1 publisher on a plain socket: packets encoded up front, sent in chunks.

    Keeps at most ``window`` messages unacknowledged (packet ids are 16 bits) and
    returns once the broker has PUBACKed every message; fails on any PUBACK reason
    code >= 0x80 (a refused message).
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = _mqtt_str("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00" + _mqtt_str(f"bench-raw-publisher-{index}")
    sock.sendall(b"\x10" + _varint(len(body)) + body)
    connack = sock.recv(64)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise SystemExit(f"raw publisher: broker refused the connection: {connack!r}")
    packets = []
    for k, (topic, payload) in enumerate(payloads):
        pbody = _mqtt_str(topic) + struct.pack("!H", k % 65_535 + 1) + b"\x00" + payload
        packets.append(b"\x32" + _varint(len(pbody)) + pbody)
    with started.get_lock():
        if not started.value:
            started.value = time.time()
    total, sent, acked, buf = len(packets), 0, 0, b""
    while acked < total:
        room = sent < total and sent - acked < window
        if room:
            chunk = packets[sent:sent + 500]
            sock.sendall(b"".join(chunk))
            sent += len(chunk)
        readable, _, _ = select.select([sock], [], [], 0 if room else 5.0)
        if not readable:
            continue
        data = sock.recv(1 << 16)
        if not data:
            raise SystemExit(f"raw publisher: broker closed the connection after {acked} acks")
        buf += data
        i = 0
        while i + 2 <= len(buf):  # packets: type byte, remaining length (< 128 here), body
            length = buf[i + 1]
            if i + 2 + length > len(buf):
                break
            if buf[i] & 0xF0 == 0x40:
                acked += 1
                if length > 2 and buf[i + 4] >= 0x80:
                    raise SystemExit(f"raw publisher: broker refused a message (reason 0x{buf[i + 4]:02x})")
            i += 2 + length
        buf = buf[i:]
    sock.sendall(b"\xe0\x00")
    sock.close()


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuWatch:
    """Samples the CPU of child processes until they exit (their /proc entry vanishes at reaping)."""

    def __init__(self, pids: list[int]):
        self.last = {pid: 0.0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self.last:
                try:
                    self.last[pid] = _proc_cpu_s(pid)
                except (OSError, IndexError):
                    pass

    def total(self) -> float:
        self._stop.set()
        self._thread.join()
        return sum(self.last.values())


def _split(payloads: list[tuple[str, bytes]], parts: int) -> list[list[tuple[str, bytes]]]:
    """Whole sensors per publisher, so every sensor's frames stay in order."""
    return [[m for m in payloads if hash(m[0]) % parts == k] for k in range(parts)]


def _start_publishers(port: int, payloads: list[tuple[str, bytes]], n: int, kind: str) -> tuple[list, "mp.Value"]:  # type: ignore[type-arg]
    ctx = mp.get_context("fork")
    started = ctx.Value("d", 0.0)
    target = _raw_publisher if kind == "raw" else _publisher
    procs = [ctx.Process(target=target, args=(port, part, started, k)) for k, part in enumerate(_split(payloads, n))]
    for proc in procs:
        proc.start()
    return procs, started


def _bare_subscriber(port: int, n: int, batching: bool, ready: "mp.Event", result: "mp.Array") -> None:  # type: ignore[type-arg]
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from ingestion.consumer import _BatchingClient

    cls = _BatchingClient if batching else mqtt.Client
    client = cls(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{batching}", protocol=mqtt.MQTTv5)
    client.manual_ack_set(True)
    got = [0]
    pending: list[int] = []
    done = threading.Event()

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        got[0] += 1
        if batching:
            pending.append(msg.mid)
            if len(pending) >= 1000 or got[0] >= n:
                c.ack_many(pending[:])  # type: ignore[attr-defined]
                pending.clear()
        else:
            c.ack(msg.mid, msg.qos)
        if got[0] >= n:
            result[0] = time.time()
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 60_000
    props.SessionExpiryInterval = 0
    client.connect("127.0.0.1", port, clean_start=True, properties=props)
    client.subscribe("sonopolis/v1/levels/+", qos=1)
    client.loop_start()
    done.wait(600)
    r = resource.getrusage(resource.RUSAGE_SELF)
    result[1] = r.ru_utime + r.ru_stime
    client.disconnect()
    client.loop_stop()


def bare_mqtt(port: int, broker_pid: int, payloads: list[tuple[str, bytes]], batching: bool) -> tuple[float, float, float]:
    """Publish -> subscribe ceiling without a database: (msgs/s, subscriber us/msg, broker us/msg)."""
    ctx = mp.get_context("fork")
    ready, result = ctx.Event(), ctx.Array("d", [0.0, 0.0])
    sub = ctx.Process(target=_bare_subscriber, args=(port, len(payloads), batching, ready, result))
    sub.start()
    if not ready.wait(20):
        raise SystemExit("bare subscriber did not subscribe")
    b0 = _proc_cpu_s(broker_pid)
    procs, started = _start_publishers(port, payloads, 1, "raw")
    sub.join(600)
    for proc in procs:
        proc.join(60)
    n = len(payloads)
    return n / (result[0] - started.value), result[1] / n * 1e6, (_proc_cpu_s(broker_pid) - b0) / n * 1e6


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class E2E:
    """Result of one end-to-end run; CPU figures are microseconds per message."""

    def __init__(self, rate: float, ingest_us: float, broker_us: float, publishers_us: float, pg_us: float, metrics: IngestMetrics):
        self.rate, self.ingest_us, self.broker_us, self.publishers_us, self.pg_us, self.metrics = rate, ingest_us, broker_us, publishers_us, pg_us, metrics


def _pg_backends_cpu(dsn: str) -> dict[int, float]:
    with psycopg.connect(dsn) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    out = {}
    for pid in pids:
        try:
            out[pid] = _proc_cpu_s(pid)
        except (OSError, IndexError):
            pass
    return out


def end_to_end(dsn: str, port: int, broker_pid: int, payloads: list[tuple[str, bytes]], settings: IngestSettings,
               publishers: int = 2, kind: str = "raw") -> E2E:
    metrics = IngestMetrics()
    service = IngestService(SmartDbSettings(dsn=dsn), settings, metrics=metrics).start()
    try:
        assert service.consumer is not None and service.consumer.subscribed.wait(20), "ingest did not subscribe"
        cpu0, b0 = _cpu_s(), _proc_cpu_s(broker_pid)
        pg0 = _pg_backends_cpu(dsn)
        procs, started = _start_publishers(port, payloads, publishers, kind)
        watch = _CpuWatch([p.pid for p in procs])
        n = len(payloads)
        deadline = time.time() + 600
        while metrics.value("sonopolis_ingest_rows_written_total") < n and time.time() < deadline:
            time.sleep(0.01)
        done = time.time()
        cpu, broker_cpu = _cpu_s() - cpu0, _proc_cpu_s(broker_pid) - b0
        pg1 = _pg_backends_cpu(dsn)
        pg_cpu = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
        for proc in procs:
            proc.join(60)
        pub_cpu = watch.total()
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM smart.levels").fetchone()[0]  # type: ignore[index]
        if stored != n:
            raise SystemExit(f"end to end stored {stored} of {n} rows")
        us = 1e6 / n
        return E2E(n / (done - started.value), cpu * us, broker_cpu * us, pub_cpu * us, pg_cpu * us, metrics)
    finally:
        service.drain_and_stop()


def _end_session(port: int, client_id: str) -> None:
    """Remove a run's persistent session, or the broker would queue later runs' messages for it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect("127.0.0.1", port, clean_start=True, properties=props)
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sensors", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--naive-rows", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=5000, help="rows per write batch (IngestSettings.batch_max_rows)")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes for (d) (sensors split between them)")
    ap.add_argument("--repeat", type=int, default=3, help="end-to-end runs; the last line reports their median")
    ap.add_argument("--paho-publishers", action="store_true", help="also run (d) with paho publisher processes")
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
        assert broker._proc is not None
        broker_pid = broker._proc.pid
        # Bare ceilings first: no ingest session exists yet to queue these messages.
        for batching, label in ((False, "stock paho subscriber, PUBACK per message"), (True, "ingest's batching paho client, PUBACKs per 1000")):
            rate, sub_us, broker_us = bare_mqtt(broker.port, broker_pid, payloads, batching)
            print(f"    bare MQTT ceiling, raw publisher -> Mosquitto -> {label}: {rate:,.0f} msgs/s "
                  f"(subscriber {sub_us:.0f} us/msg, broker {broker_us:.0f} us/msg)", flush=True)
        runs: list[E2E] = []
        kinds = ["raw"] * max(1, args.repeat) + (["paho"] if args.paho_publishers else [])
        for k, kind in enumerate(kinds):
            settings = IngestSettings(
                mqtt=MqttSettings(port=broker.port, client_id=f"bench-ingest-{k}"), metrics_port=0,
                batch_max_rows=args.batch, buffer_max_messages=60_000,
            )
            run = end_to_end(dsn, broker.port, broker_pid, payloads, settings, args.publishers, kind)
            _end_session(broker.port, settings.mqtt.client_id)
            truncate(dsn)
            quarantined = sum(run.metrics.value("sonopolis_ingest_quarantined_total", reason=r) for r in REASON_CODES)
            print(f"(d) end to end MQTT QoS 1 -> committed rows, {args.publishers} {kind} publisher(s): {run.rate:,.0f} msgs/s "
                  f"(duplicates {run.metrics.value('sonopolis_ingest_duplicate_rows_total'):.0f}, quarantined {quarantined:.0f}); "
                  f"CPU us/msg: ingest {run.ingest_us:.0f}, broker {run.broker_us:.0f}, PostgreSQL backends {run.pg_us:.0f}, "
                  f"publishers {run.publishers_us:.0f}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
            if kind == "raw":
                runs.append(run)
        e2e_rate = statistics.median(r.rate for r in runs)
        server_us = min(r.ingest_us + r.broker_us + r.pg_us for r in runs)
        print(f"    e2e median of {len(runs)} run(s): {e2e_rate:,.0f} msgs/s; server side (ingest + broker + PostgreSQL) "
              f"{server_us:.0f} us CPU/msg at best = {2e6 / server_us:,.0f} msgs/s if both cores were free", flush=True)
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
