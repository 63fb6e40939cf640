"""Bridge latency: publish on the safe broker -> PTZ command at the camera / alert on the feed.

Real services on loopback: a private Mosquitto, PostgreSQL (system one by default, a
fresh database dropped afterwards), the ONVIF camera simulator driven by the real
client library, the bridge's real HTTP/SSE feed. Events are published at a steady
rate (``--rate``, default 50/s: far above any real city's gunshot rate) from the four
sensors in turn, onsets 3 s apart so each is its own incident and steers the camera.
The i-th PTZ command is matched to the i-th event and checked against the preset of
that event's sensor; a missing or mismatched command, or a missing feed alert, counts
as lost.

    python bench/bridge.py [--events 1000] [--rate 50]

Last line: ``bridge: events=<n> ptz_p50_ms=<x> ptz_p99_ms=<y> feed_p99_ms=<z> lost=<k>``
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safecity_bridge.cameras import PtzSettings  # noqa: E402
from safecity_bridge.runner import BridgeThread  # noqa: E402
from safecity_bridge.settings import RateLimitSettings  # noqa: E402
from safecity_bridge.steering import OnvifSteerer  # noqa: E402
from simulators.onvif_camera import OnvifCameraSimulator, PtzCommand  # noqa: E402
from sonopolis.bootstrap import bootstrap  # noqa: E402
from sonopolis.embedded import LocalMosquitto  # noqa: E402
from tests.safecity_bridge.bridge_harness import SENSORS, FeedReader, Publisher, event, make_settings, past  # noqa: E402
from tests.safecity_bridge.test_bridge_cameras import camera_config, sim_camera  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=50.0, help="events per second")
    ap.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from safecity_bridge.console.auth import hash_password
    from safecity_bridge.settings import OperatorAccount

    user = ("bench", "bench password 123")
    ops = [OperatorAccount(name=user[0], password_hash=hash_password(user[1]))]
    dbname = f"sonobench_{uuid.uuid4().hex[:10]}"
    dsns = bootstrap(args.admin_dsn, dbname)
    commands: list[tuple[float, PtzCommand]] = []
    lock = threading.Lock()

    def on_command(cmd: PtzCommand) -> None:
        with lock:
            commands.append((time.monotonic(), cmd))

    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalMosquitto(Path(tmp) / "mosquitto").start()
        try:
            with OnvifCameraSimulator(sim_camera(), on_command=on_command) as sim:
                settings = make_settings(dsns.safe, broker.port, operators=ops, cameras=[camera_config(sim.port)],
                                         ptz=PtzSettings(max_cameras=1), rate_limit=RateLimitSettings(per_sensor_rate_per_s=1000, per_sensor_burst=1000))
                with BridgeThread(settings, lambda: OnvifSteerer(settings, environ={})):
                    feed = FeedReader(f"http://127.0.0.1:{settings.http_port}/feed", user).start()
                    pub = Publisher(broker.port)
                    base = past(3 * args.events + 60)
                    sent: list[tuple[str, str, float]] = []
                    period = 1.0 / args.rate
                    t_next = time.monotonic()
                    for i in range(args.events):
                        sensor = SENSORS[i % len(SENSORS)].sensor_id
                        ev = event(sensor, "gunshot", onset=base + timedelta(seconds=3 * i))
                        t_next += period
                        sent.append((ev["event_id"], sensor, pub.publish(ev)))
                        delay = t_next - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                    deadline = time.monotonic() + 15
                    feed_t: dict[str, float] = {}
                    while time.monotonic() < deadline and (len(feed_t) < args.events or len(commands) < args.events):
                        try:
                            t, m = feed.messages.get(timeout=0.2)
                        except Exception:
                            continue
                        if m.get("type") == "incident":
                            feed_t[m["event_id"]] = t
                    feed.stop()
                    pub.close()
        finally:
            broker.stop()
            with psycopg.connect(args.admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))

    ptz_ms, feed_ms, lost = [], [], 0
    for i, (eid, sensor, t_pub) in enumerate(sent):
        ok = True
        if i < len(commands) and commands[i][1].preset_token == f"p-{sensor}":
            ptz_ms.append((commands[i][0] - t_pub) * 1000)
        else:
            ok = False
        if eid in feed_t:
            feed_ms.append((feed_t[eid] - t_pub) * 1000)
        else:
            ok = False
        lost += 0 if ok else 1
    p = lambda a, q: float(np.percentile(a, q)) if a else float("nan")  # noqa: E731
    print(f"rate={args.rate}/s commands={len(commands)} feed_alerts={len(feed_t)} ptz_max_ms={max(ptz_ms, default=float('nan')):.1f} feed_p50_ms={p(feed_ms, 50):.1f}")
    print(f"bridge: events={len(sent)} ptz_p50_ms={p(ptz_ms, 50):.1f} ptz_p99_ms={p(ptz_ms, 99):.1f} feed_p99_ms={p(feed_ms, 99):.1f} lost={lost}")


if __name__ == "__main__":
    main()
