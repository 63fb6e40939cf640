"""The privacy promise, checked on a real run: `sonopolis edge FILE` in its own process.

* Every file the process opens for writing (Python audit hook on ``open``, ``os.*``
  and ``sqlite3.connect``) lies inside its message queue directory.
* No new file appears in its working directory, HOME, TMPDIR or next to the audio,
  except in the message queue.
* Everything it publishes, on either broker, validates against the published JSON
  Schemas (``messages.schema_export``): frames/batches on the smart broker, security
  events on the safe broker, and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import soundfile as sf

from detectors.classifier import DEFAULT_MODEL
from messages.schema_export import export_all
from simulators.scene import SCENE_OFFSET_DB, SceneEvent, street_scene
from sonopolis.embedded import LocalMosquitto
from tests import services
from tests.detectors.test_agent import Collector

REPO = Path(__file__).resolve().parents[2]
WRAPPER = r'''
import atexit, os, sys
written = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def hook(event, args):
    if event == "open":
        path, mode, flags = (list(args) + [None, None])[:3]
        if isinstance(path, int):
            return
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS):
            written.append(str(path))
    elif event in ("os.mkdir", "os.rename", "os.replace", "os.symlink", "os.link", "shutil.copyfile", "shutil.move", "sqlite3.connect"):
        written.append(str(args[0]))
sys.addaudithook(hook)
atexit.register(lambda: print("WRITTEN=" + repr(written), file=sys.stderr))
from sonopolis.cli import app
app(["edge", sys.argv[1], "--fast", "--start", "2026-11-23T23:00:00Z"])
'''


def _snapshot(*dirs: Path) -> set[Path]:
    return {p for d in dirs for p in d.rglob("*") if p.is_file()}


def test_edge_run_writes_only_its_queue_and_emits_only_schema_valid_messages(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    audio_dir, run_dir, home, tmpdir = (tmp_path / d for d in ("audio", "run", "home", "tmpdir"))
    for d in (audio_dir, run_dir, home, tmpdir):
        d.mkdir()
    scene = street_scene(8.0, 48000, seed=9, events=[SceneEvent("car_horn", 2.0, 0.6, 85), SceneEvent("impulse", 5.0, 0.3, 105), SceneEvent("siren", 6.0, 1.9, 80)])
    wav = audio_dir / "street.wav"
    sf.write(wav, scene.audio, 48000, subtype="FLOAT")
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    queue = run_dir / "queue"
    use_classifier = DEFAULT_MODEL.exists()

    with services.private_mosquitto(tmp_path / "safe") as safe_broker:
        smart_rx, safe_rx = Collector(mqtt_broker.port), Collector(safe_broker.port)
        before = _snapshot(audio_dir, run_dir, home, tmpdir)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "TMPDIR": str(tmpdir),
            "PYTHONPATH": str(REPO),
            "PYTHONDONTWRITEBYTECODE": "1",
            "SONOPOLIS_EDGE_SENSOR_ID": "sensor-42",
            "SONOPOLIS_EDGE_CALIBRATION_OFFSET_DB": str(SCENE_OFFSET_DB),
            "SONOPOLIS_EDGE_QUEUE_DIR": str(queue),
            "SONOPOLIS_EDGE_CLASSIFIER_ENABLED": str(use_classifier).lower(),
            "SONOPOLIS_EDGE_SMART_MQTT__PORT": str(mqtt_broker.port),
            "SONOPOLIS_EDGE_SMART_MQTT__CLIENT_ID": f"edge-{uuid.uuid4().hex[:6]}",
            "SONOPOLIS_EDGE_SAFE_MQTT__PORT": str(safe_broker.port),
            "SONOPOLIS_EDGE_SAFE_MQTT__CLIENT_ID": f"edge-safe-{uuid.uuid4().hex[:6]}",
        }
        proc = subprocess.run([sys.executable, str(wrapper), str(wav)], cwd=run_dir, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        smart_rx.wait(lambda: len(smart_rx.frames()) >= 8)
        smart_rx.close()
        safe_rx.close()
        after = _snapshot(audio_dir, run_dir, home, tmpdir)

    assert "edge: frames=8" in proc.stdout
    written_line = next(line for line in proc.stderr.splitlines() if line.startswith("WRITTEN="))
    written = [Path(p) for p in eval(written_line[len("WRITTEN="):])]  # noqa: S307 - our own repr of a list of str
    outside = [p for p in written if queue.resolve() not in p.resolve().parents and p.resolve() != queue.resolve() and str(p) != "/dev/null"]
    assert not outside, f"the agent wrote outside its message queue: {outside}"
    assert any(p.name == "outbox.sqlite3" for p in written), "the audit hook should have seen the queue being opened"
    new = sorted(after - before)
    assert new and all(queue in p.parents for p in new), f"new files outside the queue: {new}"
    assert not any(p.suffix.lower() in (".wav", ".flac", ".raw", ".pcm", ".npy") for p in new)

    schemas = export_all()
    level_schema = jsonschema.Draft202012Validator(schemas["level-message-v1.json"])
    event_schema = jsonschema.Draft202012Validator(schemas["security-event-v1.json"])
    assert len(smart_rx.frames()) == 8
    for topic, payload in smart_rx.messages:
        assert topic == "sonopolis/v1/levels/sensor-42"
        level_schema.validate(json.loads(payload))
    for topic, payload in safe_rx.messages:
        assert topic == "sonopolis-safe/v1/events/sensor-42"
        event_schema.validate(json.loads(payload))
    frames = sorted(smart_rx.frames(), key=lambda f: f.time)
    assert frames[5].lcpeak > frames[4].lcpeak + 15  # the impulse is in the levels, not in any audio
