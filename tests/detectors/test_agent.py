"""The edge agent against real Mosquitto brokers: routing, separation, outages.

The classifier here is a tiny scripted object implementing the agent's classifier
protocol (our own interface, not a service): it reports given labels at given times
of the stream, so the routing can be checked exactly. Brokers are real.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from common.config import MqttSettings
from detectors.agent import route
from detectors.runner import run_agent
from detectors.sources import Block
from detectors.settings import EdgeSettings
from messages.level_frame import LevelBatch, LevelFrame
from messages.security_event import SECURITY_CLASSES, SecurityEvent
from simulators.scene import SCENE_OFFSET_DB, SceneEvent, street_scene
from sonopolis.embedded import LocalMosquitto
from tests import services

T0 = datetime(2026, 11, 23, 22, 15, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FakeDetection:
    label: str
    confidence: float
    onset: datetime
    level_dbfs: float | None = -30.0


class ScriptedClassifier:
    sample_rate = 16000

    def __init__(self, script: list[tuple[str, float]]):
        self.script = sorted(script, key=lambda s: s[1])
        self.fed = 0
        self.start: datetime | None = None

    def feed(self, samples: np.ndarray, start: datetime) -> list[FakeDetection]:
        assert samples.dtype == np.float32
        if self.start is None:
            self.start = start
        # the agent must give contiguous time stamps at the classifier's rate
        assert start == self.start + timedelta(seconds=self.fed / self.sample_rate)
        self.fed += samples.size
        now = self.fed / self.sample_rate
        out = [FakeDetection(label, 0.9, self.start + timedelta(seconds=t)) for label, t in self.script if t <= now - 1.0]
        self.script = [s for s in self.script if s[1] > now - 1.0]
        return out


class Collector:
    """A persistent QoS 1 subscriber (clean_session=False) that survives broker restarts."""

    def __init__(self, port: int, topic: str = "#", username: str | None = None, password: str | None = None):
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{uuid.uuid4().hex[:6]}", clean_session=False)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def frames(self) -> list[LevelFrame]:
        out: list[LevelFrame] = []
        for _, payload in self.messages:
            data = json.loads(payload)
            if data["schema"] == "sonopolis.level-batch/1":
                out += LevelBatch.model_validate(data).frames
            else:
                out.append(LevelFrame.model_validate(data))
        return out

    def wait(self, predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _settings(tmp: Path, smart_port: int, safe_port: int | None) -> EdgeSettings:
    return EdgeSettings(
        sensor_id="sensor-07",
        calibration_offset_db=SCENE_OFFSET_DB,
        smart_mqtt=MqttSettings(port=smart_port, client_id=f"edge-smart-{uuid.uuid4().hex[:6]}"),
        safe_mqtt=MqttSettings(port=safe_port, client_id=f"edge-safe-{uuid.uuid4().hex[:6]}") if safe_port else None,
        queue_dir=tmp / "queue",
        drain_timeout_s=15,
    )


def _blocks(audio: np.ndarray, fs: int, block_s: float = 0.1):  # type: ignore[no-untyped-def]
    n = int(block_s * fs)
    for i in range(0, audio.size, n):
        yield Block(audio[i : i + n])


def test_route_is_the_separation_rule() -> None:
    for c in SECURITY_CLASSES:
        assert route(c) == "safe"
    assert route("car_horn") == route("siren") == "count"
    assert route("background") == route("speech") == "ignore"


SCRIPT = [("car_horn", 1.2), ("siren", 1.5), ("car_horn", 1.9), ("gunshot", 3.104), ("background", 4.0), ("glass_break", 4.5)]


def test_frames_to_smart_events_to_safe_and_nothing_crosses(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    with services.private_mosquitto(tmp_path / "safe") as safe_broker:
        smart_rx, safe_rx = Collector(mqtt_broker.port), Collector(safe_broker.port)
        scene = street_scene(6.0, 48000, seed=3, events=[SceneEvent("car_horn", 1.2, 0.5, 82.0), SceneEvent("impulse", 3.1, 0.3, 100.0)])
        stats = run_agent(_settings(tmp_path, mqtt_broker.port, safe_broker.port), _blocks(scene.audio, 48000), 48000, T0, ScriptedClassifier(SCRIPT), "fake-1")
        smart_rx.wait(lambda: len(smart_rx.frames()) >= 6)
        safe_rx.wait(lambda: len(safe_rx.messages) >= 2)
        smart_rx.close()
        safe_rx.close()

    assert stats.frames == 6 and stats.events == 2 and stats.still_queued == 0
    frames = sorted(smart_rx.frames(), key=lambda f: f.time)
    assert [f.time for f in frames] == [T0 + timedelta(seconds=i) for i in range(6)]
    assert all(topic == "sonopolis/v1/levels/sensor-07" for topic, _ in smart_rx.messages)
    assert frames[1].sources.car_horn == 2 and frames[1].sources.siren == 1
    assert sum(f.sources.car_horn + f.sources.siren for f in frames) == 3
    assert frames[1].lafmax > frames[0].lafmax + 10  # the 82 dB horn over 62 dB traffic
    for _, payload in smart_rx.messages:
        text = payload.decode()
        assert not any(c in text for c in SECURITY_CLASSES), "a security class reached the smart broker"

    events = [SecurityEvent.model_validate_json(p) for _, p in safe_rx.messages]
    assert {e.event_class.value for e in events} == {"gunshot", "glass_break"}
    assert all(t.startswith("sonopolis-safe/v1/events/sensor-07") for t, _ in safe_rx.messages)
    gunshot = next(e for e in events if e.event_class.value == "gunshot")
    assert gunshot.onset == T0 + timedelta(seconds=3.104)
    assert gunshot.level_db == pytest.approx(SCENE_OFFSET_DB - 30.0)
    assert gunshot.model == "fake-1"
    for _, payload in safe_rx.messages:
        assert "car_horn" not in payload.decode() and "siren" not in payload.decode() and "laeq" not in payload.decode()


def test_without_safe_broker_events_never_leave(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    smart_rx = Collector(mqtt_broker.port)
    scene = street_scene(6.0, 16000, seed=4)
    stats = run_agent(_settings(tmp_path, mqtt_broker.port, None), _blocks(scene.audio, 16000), 16000, T0, ScriptedClassifier(SCRIPT), "fake-1")
    smart_rx.wait(lambda: len(smart_rx.frames()) >= 6)
    smart_rx.close()
    assert stats.events == 0 and stats.events_withheld == 2
    assert len(smart_rx.frames()) == 6
    assert all(t.startswith("sonopolis/v1/levels/") for t, _ in smart_rx.messages)


def test_an_unfinished_last_second_is_said_not_silently_dropped(tmp_path: Path, mqtt_broker: LocalMosquitto, caplog) -> None:
    """Level frames cover whole seconds: a 2.8 s stream gives 2 frames, and the log says what became of the rest."""
    scene = street_scene(2.8, 16000, seed=5)
    with caplog.at_level(logging.INFO, logger="detectors.agent"):
        stats = run_agent(_settings(tmp_path, mqtt_broker.port, None), _blocks(scene.audio, 16000), 16000, T0, None, "none")
    assert stats.frames == 2
    assert any("its last 0.800 s is less than a whole 1 s period" in r.getMessage() for r in caplog.records), caplog.text


def test_broker_outage_is_ridden_out_with_the_outbox(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    """The smart broker dies mid-stream; queued frames arrive (as batches) after it returns."""
    rx = Collector(mqtt_broker.port)
    fs = 16000
    scene = street_scene(20.0, fs, seed=5)
    seen: dict[str, int] = {"blocks": 0, "queued_during_outage": 0}

    def outage(agent) -> None:  # type: ignore[no-untyped-def]
        seen["blocks"] += 1
        if seen["blocks"] == 40:
            mqtt_broker.stop()
        if seen["blocks"] == 150:
            seen["queued_during_outage"] = agent.outbox.count("smart")
            mqtt_broker.start()

    def slow_blocks():  # type: ignore[no-untyped-def]
        for b in _blocks(scene.audio, fs):
            time.sleep(0.01)
            yield b

    stats = run_agent(_settings(tmp_path, mqtt_broker.port, None), slow_blocks(), fs, T0, None, on_block=outage)
    rx.wait(lambda: len({f.time for f in rx.frames()}) >= 20, timeout=30)
    rx.close()
    assert seen["queued_during_outage"] >= 5, "frames should wait in the outbox while the broker is down"
    assert stats.still_queued == 0
    times = {f.time for f in rx.frames()}
    assert times == {T0 + timedelta(seconds=i) for i in range(20)}
    batches = [p for _, p in rx.messages if b"level-batch" in p]
    assert batches, "a backlog should be replayed as LevelBatch messages"
    assert (tmp_path / "queue" / "outbox.sqlite3").exists()


def test_the_final_drain_serves_both_brokers_at_once_within_its_timeout(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    """finish() drained the smart link, then the safe one, each for the whole drain_timeout_s: with the
    smart broker down a security event waited the full timeout behind it (and a stop took twice the
    timeout when both were down, past a service manager's grace period)."""
    import socket

    from detectors.agent import EdgeAgent
    from detectors.outbox import Outbox
    from detectors.publisher import BrokerLink

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens: the smart broker is down
    outbox = Outbox(tmp_path / "queue", 1000)
    smart = BrokerLink("smart", MqttSettings(port=dead_port, client_id=f"edge-smart-{uuid.uuid4().hex[:6]}"), outbox)
    safe = BrokerLink("safe", MqttSettings(port=mqtt_broker.port, client_id=f"edge-safe-{uuid.uuid4().hex[:6]}"), outbox)
    rx = Collector(mqtt_broker.port, topic="sonopolis-safe/#")
    for link in (smart, safe):
        link.start()
    try:
        agent = EdgeAgent(sensor_id="sensor-07", calibration_offset_db=100.0, sample_rate=16000, start=T0,
                          outbox=outbox, smart=smart, safe=safe)
        outbox.put("smart", "frame", "sonopolis/v1/levels/sensor-07", "{}")
        event = SecurityEvent.model_validate({"sensor_id": "sensor-07", "class": "gunshot", "confidence": 0.9,
                                              "onset": T0, "level_db": 100.0})
        outbox.put("safe", "event", event.topic(), event.to_json())
        time.sleep(1.0)  # the safe link is connected; nothing was pumped yet
        started = time.monotonic()
        arrived: list[float] = []
        watcher = threading.Thread(target=lambda: (rx.wait(lambda: bool(rx.messages), 10), arrived.append(time.monotonic())))
        watcher.start()
        delivered = agent.finish(3.0)
        took = time.monotonic() - started
        watcher.join()
    finally:
        for link in (smart, safe):
            link.stop()
        rx.close()
    assert not delivered  # the frame stays queued for the next start
    assert (outbox.count("smart"), outbox.count("safe")) == (1, 0)
    assert [json.loads(p)["event_id"] for _, p in rx.messages] == [str(event.event_id)]
    assert arrived[0] - started < 1.5, arrived[0] - started  # not after the smart link's whole timeout
    assert took < 3.5, took  # one timeout for the whole drain
