"""The whole running system hears gunshots and breaking glass; the smart side never learns of it.

One scene goes through every real process (edge agents on in-memory street audio,
both brokers with the production ACLs, ingest, api, ngsi-sync, bridge, simulated
cameras and NGSI-LD broker). Then, from the outside and with each side's own
credentials, we look everywhere the smart side keeps or shows data: its database
schema, the NGSI-LD broker, the open API and its event stream, the open-data files,
the smart broker. No security class may appear, and the smart role cannot even see
the safe schema. We also check that no process wrote audio anywhere.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from psycopg import sql
from rich.console import Console

from messages.security_event import SECURITY_CLASSES
from simulators.neighbourhood import frames as sim_frames
from sonopolis.demo_run import DemoRun

REPO = Path(__file__).resolve().parents[2]
SECURITY_WORDS = re.compile(r"\b(" + "|".join(SECURITY_CLASSES) + r"|glass[ _-]?break\w*|gun[ _-]?shot\w*)\b", re.IGNORECASE)
AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM", b"caff", b"#!AMR")
ALLOWED_WORKDIR_TOPS = {"pg", "mqtt-smart", "mqtt-safe", "logs", "edge-queue", "opendata", "safe.toml", "sensors.geojson", "home", "tmp"}


def _files(root: Path) -> dict[Path, float]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        if "/.git" in dirpath or "/.venv" in dirpath or "__pycache__" in dirpath or "/proc" in dirpath:
            continue
        for n in names:
            p = Path(dirpath) / n
            try:
                out[p] = p.stat().st_mtime
            except OSError:
                continue
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoRun, object, dict[Path, float], float]]:
    workdir = tmp_path_factory.mktemp("e2e-world")
    roots = [REPO, Path(tempfile.gettempdir())]
    started = time.time()
    before: dict[Path, float] = {}
    for r in roots:
        before |= _files(r)
    run = DemoRun(workdir, Console(quiet=True), n_sensors=10, n_edge=4, seed=0)
    # Relax the open-data gate so one short day of a few sensors can be published in a test.
    run.smart_overrides = {
        "SONOPOLIS_SMART_API__EXPORTS__PUBLICATION_DELAY_H": "0",
        "SONOPOLIS_SMART_API__EXPORTS__MIN_COVERAGE": "0",
        "SONOPOLIS_SMART_API__EXPORTS__MIN_SENSOR_FRACTION": "0",
    }
    try:
        report = run.execute(history_minutes=15, scene_seconds=40)
        yield run, report, before, started
    finally:
        run.shutdown()


def test_the_safe_path_did_its_job(world) -> None:  # noqa: ANN001
    run, report, *_ = world
    assert report.safe["incidents"] >= 1, report.safe
    assert "gunshot" in str(report.safe["incident_classes"]), report.safe
    assert report.safe["camera_commands_received"] >= 1, report.safe
    assert report.smart["frames_from_edge_agents"] >= 4 * 40 - 8, report.smart


def test_smart_database_holds_no_security_content_and_cannot_see_the_safe_schema(world) -> None:  # noqa: ANN001
    run, *_ = world
    with psycopg.connect(run.dsns.smart, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'smart'")]
        assert {"levels", "sensors", "quarantine", "levels_1min"} <= set(tables)
        hits = []
        for t in tables:
            for (text,) in conn.execute(sql.SQL("SELECT row_to_json(x)::text FROM smart.{} x").format(sql.Identifier(t))):
                if SECURITY_WORDS.search(text):
                    hits.append((t, text[:200]))
        assert hits == []
        assert conn.execute("SELECT has_schema_privilege('safe', 'USAGE')").fetchone()[0] is False
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM safe.incidents")
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'safe'").fetchone()[0] == 0
    with psycopg.connect(run.dsns.safe, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM safe.incidents").fetchone()[0] >= 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM smart.levels")


def test_ngsi_ld_entities_carry_no_security_content(world) -> None:  # noqa: ANN001
    run, *_ = world
    state = run.ngsi_broker_state()
    assert state["entities"].get("Device", 0) == len(run.world.sensors)
    body = httpx.get(f"http://127.0.0.1:{run.ports['ngsi']}/ngsi-ld/v1/entities", params={"type": "Device,NoiseLevelObserved", "limit": 1000},
                     headers={"Accept": "application/json"}, timeout=10).text
    assert SECURITY_WORDS.search(body) is None
    assert not any(SECURITY_WORDS.search(i) for i in state["ids"])


def test_open_api_and_its_event_stream_carry_no_security_content(world) -> None:  # noqa: ANN001
    run, *_ = world
    api = f"http://127.0.0.1:{run.ports['api']}"
    sensor = run.world.edge_ids[0]
    bodies = []
    with httpx.Client(base_url=api, timeout=10) as http:
        for path in ("/v1/sensors", "/v1/latest", "/v1/levels?period=1min&limit=1000", f"/v1/sensors/{sensor}/levels?period=1min",
                     "/v1/sources/hourly", "/v1/lden", "/v1/events", "/v1/transparency", "/ngsi-ld/v1/entities?type=NoiseLevelObserved&limit=100"):
            r = http.get(path)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
            bodies.append(r.text)
        chunks: list[str] = []
        with http.stream("GET", "/v1/events/stream", timeout=httpx.Timeout(5, read=3)) as stream:
            try:
                for chunk in stream.iter_text():
                    chunks.append(chunk)
            except httpx.ReadTimeout:
                pass
        bodies.append("".join(chunks))
    hits = [SECURITY_WORDS.search(b).group(0) for b in bodies if SECURITY_WORDS.search(b)]
    assert hits == []


def test_open_data_files_carry_no_security_content(world) -> None:  # noqa: ANN001
    run, *_ = world
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=11, minute=0, second=0, microsecond=0)
    for s in run.world.sensors[:3]:
        run.publish_frames(s.sensor_id, sim_frames(s, yesterday, 600, seed=9))
    day = yesterday.date()  # 11:00 UTC is midday in Paris: same local day
    deadline = time.monotonic() + 60
    runs = []
    while time.monotonic() < deadline:
        r = httpx.post(f"http://127.0.0.1:{run.ports['api']}/v1/admin/exports", params={"day": day.isoformat()},
                       headers={"Authorization": f"Bearer {run.admin_token}"}, timeout=60)
        assert r.status_code == 200, r.text
        runs = r.json()
        if runs and all(x.get("status") == "published" for x in runs):
            break
        time.sleep(3)
    files = [p for p in (run.workdir / "opendata").rglob("*") if p.is_file()]
    assert files, runs
    for p in files:
        assert SECURITY_WORDS.search(p.read_text(errors="replace")) is None, p


def test_smart_credentials_cannot_hear_safe_topics(world) -> None:  # noqa: ANN001
    """The ingest account on the smart broker; a sensor publishing a (forged-looking) event on the smart broker is refused."""
    run, *_ = world
    got: list[str] = []
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    client.username_pw_set("svc.ingest", run.world.smart_passwords["svc.ingest"])
    client.on_message = lambda c, u, m: got.append(m.topic)
    client.on_subscribe = lambda *a: ready.set()
    client.connect("127.0.0.1", run.brokers["smart"].port)
    client.subscribe([("#", 1), ("sonopolis-safe/#", 1)])
    client.loop_start()
    assert ready.wait(5)
    sensor = run.world.edge_ids[0]
    event = json.dumps({"schema": "sonopolis.security-event/1", "sensor_id": sensor, "class": "gunshot", "confidence": 0.9,
                        "onset": datetime.now(timezone.utc).isoformat(), "level_db": 100.0})
    # The sensor itself tries to push an event into the smart broker: the ACL refuses it.
    forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"forger-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    forger.username_pw_set(sensor, run.world.smart_passwords[sensor])
    acks: list[int] = []
    forger.on_publish = lambda c, u, mid, rc, p: acks.append(rc.value)
    forger.connect("127.0.0.1", run.brokers["smart"].port)
    forger.loop_start()
    forger.publish(f"sonopolis-safe/v1/events/{sensor}", event, qos=1).wait_for_publish(5)
    # ...and a genuine event on the safe broker never shows up on the smart broker.
    safe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    safe.username_pw_set(sensor, run.world.safe_passwords[sensor])
    safe.connect("127.0.0.1", run.brokers["safe"].port)
    safe.loop_start()
    safe.publish(f"sonopolis-safe/v1/events/{sensor}", event, qos=1).wait_for_publish(5)
    # Positive control: the ingest account does hear this sensor's levels.
    run.publish_frames(sensor, sim_frames(run.world.sensor(sensor), datetime.now(timezone.utc) - timedelta(minutes=1), 1, seed=42))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not got:
        time.sleep(0.1)
    time.sleep(1.0)
    for c in (client, forger, safe):
        c.loop_stop()
        c.disconnect()
    assert got and all(t.startswith("sonopolis/v1/levels/") for t in got), got
    assert acks and acks[0] == 135  # Not authorized
    # The smart account does not even exist on the safe broker.
    denied: list[bool] = []
    other = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe2-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    other.username_pw_set("svc.ingest", run.world.smart_passwords["svc.ingest"])
    other.on_connect = lambda c, u, f, rc, p: denied.append(rc.is_failure)
    other.connect("127.0.0.1", run.brokers["safe"].port)
    other.loop_start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not denied:
        time.sleep(0.05)
    other.loop_stop()
    assert denied == [True]


def test_no_process_wrote_audio(world) -> None:  # noqa: ANN001
    run, _report, before, started = world
    # Every process of the world ran with HOME and TMPDIR inside its workdir. Other test
    # runs' temporary folders (pytest-of-*) are not ours to judge, except our own workdir.
    new_files = []
    for root in (REPO, Path(tempfile.gettempdir()), Path("/var/tmp")):
        for p, mtime in _files(root).items():
            foreign = "pytest-of-" in str(p) and run.workdir not in p.parents
            if not foreign and (p not in before or (mtime >= started and before.get(p, 0) < started)):
                new_files.append(p)
    audio = []
    for p in new_files:
        if p.suffix.lower() in {".wav", ".flac", ".ogg", ".mp3", ".opus", ".pcm", ".raw", ".aiff"}:
            audio.append(p)
            continue
        try:
            with open(p, "rb") as fh:
                head = fh.read(12)
        except OSError:
            continue
        if head.startswith(AUDIO_MAGIC) and (head[8:12] in (b"WAVE", b"AIFF") or not head.startswith((b"RIFF", b"FORM"))):
            audio.append(p)
    assert audio == []
    # Everything the demo world created is accounted for: databases, brokers, logs, message queues, camera logs.
    tops = {p.relative_to(run.workdir).parts[0] for p in new_files if run.workdir in p.parents}
    unexpected = {t for t in tops if t not in ALLOWED_WORKDIR_TOPS and not t.endswith(("-ptz.jsonl", "-presets.json"))}
    assert unexpected == set()
    queue_files = [p for p in new_files if "edge-queue" in p.parts]
    assert queue_files, "the edge agents keep a message queue"
    # Nothing at all in the processes' HOME and TMPDIR (e.g. no onnxruntime device id / telemetry cache).
    contained = [p for p in new_files if run.workdir in p.parents and p.relative_to(run.workdir).parts[0] in ("home", "tmp")]
    assert contained == []
