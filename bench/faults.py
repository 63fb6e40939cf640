"""Resilience under faults, counted: the whole smart and safe pipelines under steady load.

Starts the real system as the demo does (private PostgreSQL, smart and safe Mosquitto
with the production ACLs, ingest / ngsi-sync / bridge as their own processes,
simulated ONVIF cameras and NGSI-LD broker), then, while sensors keep publishing
level frames (smart broker) and security events (safe broker):

1. restarts both MQTT brokers,
2. restarts PostgreSQL,
3. makes the NGSI-LD endpoint answer 503 for a while,
4. kills (SIGKILL) and restarts the ingest and bridge processes,

and finally counts, from the outside:

* published: frames the sensors handed to MQTT (QoS 1, persistent sessions, as a sensor's firmware does);
* stored / lost / duplicated_rows: rows in ``smart.levels`` (smart role) for those frames;
* alerts_published / alerts_delivered: security events published vs. events recorded in an
  incident visible to the control room (safe role);
* ngsi_backlog_after: settled aggregate buckets (coverage >= the sync's minimum) not in the
  NGSI-LD broker after recovery.

Last line: ``faults: published=<n> stored=<n> lost=<k> duplicated_rows=<d> alerts_published=<a> alerts_delivered=<b> ngsi_backlog_after=<m>``
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from messages.level_frame import TOPIC_PREFIX as LEVELS  # noqa: E402
from messages.security_event import SECURITY_CLASSES  # noqa: E402
from messages.security_event import TOPIC_PREFIX as EVENTS  # noqa: E402
from simulators.neighbourhood import frames as sim_frames  # noqa: E402
from sonopolis.demo_run import DemoRun  # noqa: E402


class SensorLink:
    """One sensor's MQTT session as its firmware would hold it: QoS 1, persistent, auto-reconnect."""

    def __init__(self, run: DemoRun, side: str, sensor_id: str):
        broker = run.brokers[side]
        passwords = run.world.smart_passwords if side == "smart" else run.world.safe_passwords
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{sensor_id}-{side}", clean_session=False)
        self.client.username_pw_set(sensor_id, passwords[sensor_id])
        self.client.reconnect_delay_set(0.1, 2)
        self.client.max_queued_messages_set(0)
        self.acked = 0
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.connect_async("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason, props) -> None:  # noqa: ANN001
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sensors", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=80.0, help="Duration of the load (faults happen inside it)")
    ap.add_argument("--frame-hz", type=float, default=10.0, help="Frames per second per sensor (data time runs faster than wall time)")
    ap.add_argument("--event-every-s", type=float, default=0.5)
    ap.add_argument("--quick", action="store_true", help="Shorter run (45 s of load)")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 45.0
    console = Console()
    signal.signal(signal.SIGTERM, _interrupt)  # a killed bench stops its services too (finally below)
    workdir = Path(tempfile.mkdtemp(prefix="sonopolis-faults-"))
    run = DemoRun(workdir, console, n_sensors=args.sensors, n_edge=0, seed=3)
    try:
        return _bench(run, args, console)
    finally:
        run.shutdown()


def _bench(run: DemoRun, args: argparse.Namespace, console: Console) -> int:  # noqa: PLR0915
    run.start_services()
    sensors = run.world.sensors
    smart_links = {s.sensor_id: SensorLink(run, "smart", s.sensor_id) for s in sensors}
    safe_links = {s.sensor_id: SensorLink(run, "safe", s.sensor_id) for s in sensors}
    t0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    published_frames = 0
    event_ids: list[str] = []
    stop = threading.Event()
    log: list[str] = []

    def frame_load() -> None:
        nonlocal published_frames
        second = 0
        next_tick = time.monotonic()
        while not stop.is_set():
            for s in sensors:
                frame = sim_frames(s, t0 + timedelta(seconds=second), 1, seed=second)[0]
                smart_links[s.sensor_id].publish(f"{LEVELS}/{s.sensor_id}", json.dumps(frame))
                published_frames += 1
            second += 1
            next_tick += 1.0 / args.frame_hz
            time.sleep(max(0.0, next_tick - time.monotonic()))

    def event_load() -> None:
        rng = random.Random(5)
        while not stop.is_set():
            s = rng.choice(sensors)
            eid = str(uuid.uuid4())
            event = {
                "schema": "sonopolis.security-event/1", "event_id": eid, "sensor_id": s.sensor_id,
                "class": rng.choice(SECURITY_CLASSES), "confidence": round(rng.uniform(0.7, 0.99), 3),
                "onset": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level_db": 95.0, "model": "bench",
            }
            safe_links[s.sensor_id].publish(f"{EVENTS}/{s.sensor_id}", json.dumps(event))
            event_ids.append(eid)
            time.sleep(args.event_every_s)

    def process(name: str):  # noqa: ANN202
        return next(p for p in run.supervisor.processes if p.name == name)

    def at(fraction: float) -> None:
        target = start + fraction * args.seconds
        while time.monotonic() < target:
            time.sleep(0.05)

    threads = [threading.Thread(target=frame_load, daemon=True), threading.Thread(target=event_load, daemon=True)]
    start = time.monotonic()
    for t in threads:
        t.start()

    at(0.12)
    log.append("restart smart and safe MQTT brokers")
    run.brokers["smart"].restart()
    run.brokers["safe"].restart()
    at(0.30)
    log.append("restart PostgreSQL")
    assert run.pg is not None
    run.pg.restart()
    at(0.45)
    log.append("NGSI-LD endpoint answers 503")
    run.set_ngsi_outage(True)
    at(0.60)
    run.set_ngsi_outage(False)
    log.append("NGSI-LD endpoint back")
    log.append("kill -9 ingest, restart")
    process("ingest").kill()
    time.sleep(2)
    process("ingest").start()
    at(0.75)
    log.append("kill -9 bridge, restart")
    process("bridge").kill()
    time.sleep(2)
    process("bridge").start()
    at(1.0)
    stop.set()
    for t in threads:
        t.join(10)
    for line in log:
        console.print(f"fault: {line}")
    # A service that died of a fault (and was not restarted on purpose) is a finding in itself:
    # in production the container restart policy would hide it, here it must show.
    dead = [p.name for p in run.supervisor.processes if not p.alive()]
    console.print(f"services dead after the faults: {dead or 'none'}")

    # Drain: every publish acknowledged by the brokers, every row committed, one more NGSI round.
    deadline = time.monotonic() + 180
    stored = alerts_delivered = 0
    while time.monotonic() < deadline:
        acked = sum(link.acked for link in smart_links.values())
        with psycopg.connect(run.dsns.smart, autocommit=True) as conn:
            stored = conn.execute("SELECT count(DISTINCT (sensor_id, time)) FROM smart.levels").fetchone()[0]
        with psycopg.connect(run.dsns.safe, autocommit=True) as conn:
            alerts_delivered = conn.execute(
                "SELECT count(DISTINCT e.event_id) FROM safe.events e JOIN safe.incidents i USING (incident_id) WHERE e.event_id = ANY(%s::uuid[])",
                (event_ids,),
            ).fetchone()[0]
        if acked >= published_frames and stored >= published_frames and alerts_delivered >= len(event_ids):
            break
        time.sleep(1)
    for link in [*smart_links.values(), *safe_links.values()]:
        link.close()
    with psycopg.connect(run.dsns.smart, autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM smart.levels").fetchone()[0]
        stored = conn.execute("SELECT count(DISTINCT (sensor_id, time)) FROM smart.levels").fetchone()[0]
    backlog = _ngsi_backlog(run, console)
    lost = max(0, published_frames - stored)
    print(
        f"faults: published={published_frames} stored={stored} lost={lost} duplicated_rows={rows - stored} "
        f"alerts_published={len(event_ids)} alerts_delivered={alerts_delivered} ngsi_backlog_after={backlog}"
    )
    return 0


def _ngsi_backlog(run: DemoRun, console: Console) -> int:
    """Settled, sufficiently covered 15 min / 1 h buckets missing from the broker after recovery."""
    from ngsi.mapping import parse_observation_id  # the id scheme is the publisher's own

    deadline = time.monotonic() + 90
    missing: set[str] = set()
    while time.monotonic() < deadline:
        with psycopg.connect(run.dsns.smart, autocommit=True) as conn:
            due = conn.execute(
                "SELECT sensor_id, '15min', bucket FROM smart.levels_15min WHERE coverage >= 0.5 AND bucket + interval '15 min' <= now() - interval '1 min'"
                " UNION ALL SELECT sensor_id, '1h', bucket FROM smart.levels_1h WHERE coverage >= 0.5 AND bucket + interval '1 hour' <= now() - interval '1 min'"
            ).fetchall()
        have = set()
        for entity_id in run.ngsi_broker_state()["ids"]:
            parsed = parse_observation_id(entity_id)
            if parsed:
                have.add((parsed[0], parsed[1].name, parsed[2]))
        missing = {(sensor, period, bucket) for sensor, period, bucket in due} - have
        if not missing:
            break
        time.sleep(3)
    if missing:
        console.print(f"NGSI backlog examples: {sorted(missing)[:3]}")
    return len(missing)


if __name__ == "__main__":
    sys.exit(main())
