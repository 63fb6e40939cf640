"""A publish the broker refuses is never taken for a delivery.

Against a real mosquitto 2.0.11 with the deployed ACL (deploy/mosquitto/*/acl): a sensor
whose broker account does not match its sensor id publishes to a topic the ACL denies,
and over MQTT v5 mosquitto answers each QoS 1 PUBLISH with PUBACK 0x87 (Not authorized);
the connection stays up. The link used to delete those rows as delivered: every frame and
security event vanished while the agent reported them sent.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import soundfile as sf
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from common.config import MqttSettings
from detectors import refusal
from detectors.cli import REFUSED_EXIT
from detectors.outbox import Channel, Outbox
from detectors.publisher import BrokerLink
from detectors.runner import account_mismatches, run_agent
from detectors.settings import EdgeSettings
from messages.security_event import SecurityEvent
from simulators.scene import SCENE_OFFSET_DB, street_scene
from sonopolis.embedded import LocalMosquitto
from tests import services
from tests.detectors.test_agent import SCRIPT, T0, Collector, ScriptedClassifier, _blocks
from tests.detectors.test_outbox import _frame_json
from tests.detectors.test_receive_maximum import _link as _anonymous_link
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
SENSOR = "sensor-07"
WRONG_ACCOUNT = "sensor-7"  # a typo in the sensor's broker account: the ACL pattern %u no longer matches its topic
PASSWORDS = {SENSOR: "pw-07", WRONG_ACCOUNT: "pw-7", "svc.ingest": "pw-ingest", "svc.bridge": "pw-bridge"}


@pytest.fixture
def smart_acl_broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """The production smart ACL: a sensor's user may publish its own levels topic only."""
    with services.private_mosquitto(tmp_path, users=PASSWORDS, acl_file=REPO / "deploy/mosquitto/smart/acl") as broker:
        yield broker


@contextmanager
def _link(channel: Channel, outbox: Outbox, port: int, user: str) -> Iterator[BrokerLink]:
    settings = MqttSettings(port=port, client_id=f"edge-{uuid.uuid4().hex[:6]}", username=user, password=PASSWORDS[user])
    link = BrokerLink(channel, settings, outbox)
    link.start()
    try:
        wait_until(lambda: link.connected, timeout=10, what=f"{channel} link connected as {user}")
        yield link
    finally:
        link.stop()


def _payloads_in_file(path: Path) -> list[str]:
    """Every message payload the queue file still holds, whatever table it sits in."""
    with sqlite3.connect(path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [p for t in tables if "payload" in [c[1] for c in db.execute(f"PRAGMA table_info({t})")]
                for (p,) in db.execute(f"SELECT payload FROM {t}")]


def test_frames_the_acl_denies_are_kept_and_delivered_once_the_account_is_fixed(
    tmp_path: Path, smart_acl_broker: LocalMosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    topic, payload = _frame_json(SENSOR)
    outbox = Outbox(tmp_path / "queue", max_messages=1000)
    for _ in range(5):
        outbox.put("smart", "frame", topic, payload)

    with caplog.at_level(logging.INFO, logger="detectors"), _link("smart", outbox, smart_acl_broker.port, WRONG_ACCOUNT) as link:
        link.drain(10)
        assert len(_payloads_in_file(outbox.path)) == 5, "frames the broker refused were deleted as delivered"
        assert link.delivered == 0
        assert link.refused == 5
    assert outbox.count("smart") == 0, "a refused message must not wedge the queue"
    assert outbox.refused_count("smart") == 5
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("smart" in m and topic in m and "Not authorized" in m and "5" in m for m in errors), errors
    outbox.close()

    # The account is corrected and the agent restarted: the refused frames are offered again and arrive.
    again = Outbox(tmp_path / "queue", max_messages=1000)
    assert again.requeue_refused() == 5
    rx = Collector(smart_acl_broker.port, username="svc.ingest", password=PASSWORDS["svc.ingest"])
    try:
        with _link("smart", again, smart_acl_broker.port, SENSOR) as link:
            assert link.drain(10)
            assert (link.delivered, link.refused) == (5, 0)
        wait_until(lambda: len(rx.frames()) >= 5, timeout=10, what="the five frames at the subscriber")
    finally:
        rx.close()
    assert again.refused_count() == 0 and _payloads_in_file(again.path) == []
    assert all(t == topic for t, _ in rx.messages) and json.loads(payload)["sensor_id"] == SENSOR


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0x00, "delivered"), (0x10, "delivered"), (0x87, "set_aside"), (0x90, "set_aside"), (0x99, "set_aside"),
     (0x97, "retry"), (0x83, "retry"), (0x80, "retry")],
)
def test_the_reason_code_decides(code: int, expected: str) -> None:
    """0x10 No matching subscribers is a success; permanent refusals are set aside at once."""
    assert refusal.verdict(ReasonCode(PacketTypes.PUBACK, identifier=code), tries=0) == expected


def test_an_account_the_shipped_acl_refuses_is_named_at_start(tmp_path: Path) -> None:
    """Caught before the first message is refused: the ACL grants account X the topic .../X only."""
    ok = EdgeSettings(sensor_id="sensor-07", queue_dir=tmp_path, smart_mqtt={"username": "sensor-07"},
                      safe_mqtt={"client_id": "s-07-safe", "username": "sensor-07"})
    assert account_mismatches(ok) == []
    wrong = EdgeSettings(sensor_id="sensor-07", queue_dir=tmp_path, smart_mqtt={"username": "sensor-7"},
                         safe_mqtt={"client_id": "s-07-safe", "username": "sensor-07"})
    (line,) = account_mismatches(wrong)
    assert "'sensor-7'" in line and "deploy/mosquitto/smart/acl" in line and "0x87" in line
    acl = (Path(__file__).parents[2] / "deploy/mosquitto/smart/acl").read_text()
    assert "pattern write sonopolis/v1/levels/%u" in acl  # the rule the warning speaks of


def test_a_transient_refusal_is_retried_only_a_bounded_number_of_times() -> None:
    quota = ReasonCode(PacketTypes.PUBACK, identifier=0x97)
    assert refusal.verdict(quota, tries=refusal.RETRY_ROUNDS - 2) == "retry"
    assert refusal.verdict(quota, tries=refusal.RETRY_ROUNDS - 1) == "set_aside"
    assert [refusal.retry_delay(n) for n in (1, 2, 3, 7, 8)] == [1, 2, 4, 60, 60]


# mosquitto 2.0.11 never refuses a QoS 1 message for a transient reason (its quota counts
# QoS 2 only), so the broker's real PUBACK is rewritten to 0x97 for chosen payloads.
QUOTA_EXCEEDED = ReasonCode(PacketTypes.PUBACK, identifier=0x97)


def _refuse_when(link: BrokerLink, refuse: Callable[[dict], bool]) -> None:
    """The broker's PUBACK for a message whose payload ``refuse`` picks reads 0x97 Quota exceeded."""
    original = link._client.on_publish

    def rewritten(client, userdata, mid, reason, properties):  # noqa: ANN001, ANN202
        payload = json.loads(client._out_messages[mid].payload)  # paho keeps the message until on_publish returns
        original(client, userdata, mid, QUOTA_EXCEEDED if refuse(payload) else reason, properties)

    link._client.on_publish = rewritten


def _events(outbox: Outbox, n: int) -> None:
    for i in range(n):
        outbox.put("safe", "event", f"sonopolis-safe/v1/events/{SENSOR}", json.dumps({"i": i}))


def test_a_transiently_refused_event_stays_queued_and_is_sent_again_after_a_pause(
    tmp_path: Path, mqtt_broker: LocalMosquitto, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(refusal, "RETRY_FIRST_S", 0.5)
    outbox = Outbox(tmp_path / "queue", max_messages=1000)
    _events(outbox, 3)
    refusals = {"left": 1}

    def once(payload: dict) -> bool:
        if payload["i"] == 0 and refusals["left"]:
            refusals["left"] -= 1
            return True
        return False

    rx = Collector(mqtt_broker.port)
    try:
        with caplog.at_level(logging.WARNING, logger="detectors"), _anonymous_link(outbox, mqtt_broker.port, qos=1) as link:
            _refuse_when(link, once)
            wait_until(lambda: (link.pump(), link.delivered)[1] == 2, timeout=10, what="the two events not refused")
            assert [json.loads(r.payload)["i"] for r in outbox.pending("safe", 10)] == [0], "the refused event must stay queued"
            assert link.pump() == 0, "nothing leaves during the pause"
            assert link.drain(10)
            assert (link.delivered, link.refused, outbox.refused_count()) == (3, 0, 0)
        wait_until(lambda: len(rx.messages) >= 4, timeout=10, what="the event sent again")
    finally:
        rx.close()
    assert [json.loads(p)["i"] for _, p in rx.messages][-1] == 0  # taken by the broker twice: the first answer lied
    assert any("Quota exceeded (0x97)" in r.getMessage() and "sent again in" in r.getMessage() for r in caplog.records)


def test_an_event_refused_again_and_again_is_set_aside_and_the_queue_moves_on(
    tmp_path: Path, mqtt_broker: LocalMosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(refusal, "RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(refusal, "RETRY_MAX_S", 0.05)
    outbox = Outbox(tmp_path / "queue", max_messages=1000)
    _events(outbox, 3)
    with _anonymous_link(outbox, mqtt_broker.port, qos=1) as link:
        _refuse_when(link, lambda payload: payload["i"] == 0)
        assert link.drain(15), "a message the broker keeps refusing wedged the queue"
        assert (link.delivered, link.refused) == (2, 1)
    assert outbox.refused_count("safe") == 1 and outbox.count() == 0
    with sqlite3.connect(outbox.path) as db:
        assert db.execute("SELECT payload, reason FROM refused").fetchall() == [('{"i": 0}', "Quota exceeded (0x97)")]


def _edge_settings(tmp: Path, smart_port: int, safe_port: int, safe_user: str) -> EdgeSettings:
    return EdgeSettings(
        sensor_id=SENSOR,
        calibration_offset_db=SCENE_OFFSET_DB,
        smart_mqtt=MqttSettings(port=smart_port, client_id=f"edge-smart-{uuid.uuid4().hex[:6]}"),
        safe_mqtt=MqttSettings(port=safe_port, client_id=f"edge-safe-{uuid.uuid4().hex[:6]}", username=safe_user,
                               password=PASSWORDS[safe_user]),
        queue_dir=tmp / "queue",
        drain_timeout_s=10,
    )


def test_security_events_the_safe_acl_denies_are_counted_kept_and_sent_at_the_next_start(
    tmp_path: Path, mqtt_broker: LocalMosquitto
) -> None:
    """The agent's run: frames arrive, refused events are reported (not 'sent'), and a restart with the
    account fixed delivers them to the safe city bridge's account."""
    scene = street_scene(6.0, 16000, seed=4)
    with services.private_mosquitto(tmp_path / "safe", users=PASSWORDS, acl_file=REPO / "deploy/mosquitto/safe/acl") as safe_broker:
        bridge = Collector(safe_broker.port, username="svc.bridge", password=PASSWORDS["svc.bridge"])
        try:
            stats = run_agent(_edge_settings(tmp_path, mqtt_broker.port, safe_broker.port, WRONG_ACCOUNT),
                              _blocks(scene.audio, 16000), 16000, T0, ScriptedClassifier(SCRIPT), "fake-1")
            assert (stats.frames, stats.events, stats.still_queued, stats.refused) == (6, 2, 0, 2)

            again = run_agent(_edge_settings(tmp_path, mqtt_broker.port, safe_broker.port, SENSOR), iter([]), 16000, T0, None)
            assert (again.events, again.still_queued, again.refused) == (0, 0, 0)
            wait_until(lambda: len(bridge.messages) >= 2, timeout=10, what="both events at the bridge")
        finally:
            bridge.close()
    labels = {SecurityEvent.model_validate_json(p).event_class.value for _, p in bridge.messages}
    assert labels == {"gunshot", "glass_break"} and len(bridge.messages) == 2


def test_the_edge_command_reports_refused_messages_and_delivers_them_after_the_fix(
    tmp_path: Path, smart_acl_broker: LocalMosquitto
) -> None:
    wav = tmp_path / "street.wav"
    sf.write(wav, street_scene(3.0, 48000, seed=2).audio, 48000, subtype="FLOAT")
    ingest = Collector(smart_acl_broker.port, username="svc.ingest", password=PASSWORDS["svc.ingest"])

    def edge(user: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "PYTHONPATH": str(REPO),
            "SONOPOLIS_EDGE_SENSOR_ID": SENSOR,
            "SONOPOLIS_EDGE_CALIBRATION_OFFSET_DB": str(SCENE_OFFSET_DB),
            "SONOPOLIS_EDGE_QUEUE_DIR": str(tmp_path / "queue"),
            "SONOPOLIS_EDGE_CLASSIFIER_ENABLED": "false",
            "SONOPOLIS_EDGE_SMART_MQTT__PORT": str(smart_acl_broker.port),
            "SONOPOLIS_EDGE_SMART_MQTT__CLIENT_ID": f"edge-{uuid.uuid4().hex[:6]}",
            "SONOPOLIS_EDGE_SMART_MQTT__USERNAME": user,
            "SONOPOLIS_EDGE_SMART_MQTT__PASSWORD": PASSWORDS[user],
        }
        command = [sys.executable, "-c", "from sonopolis.cli import app; app()", "edge", str(wav), "--fast",
                   "--start", "2026-11-23T23:00:00Z"]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    try:
        wrong = edge(WRONG_ACCOUNT)
        assert wrong.returncode == REFUSED_EXIT, wrong.stderr[-3000:]
        assert "edge: frames=3 events=0 events_withheld=0 queued=0 dropped=0 refused=3" in wrong.stdout, wrong.stdout
        assert "Not authorized (0x87)" in wrong.stderr and "sensor-7" in wrong.stderr

        fixed = edge(SENSOR)
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert "edge: frames=3 events=0 events_withheld=0 queued=0 dropped=0 refused=0" in fixed.stdout, fixed.stdout
        wait_until(lambda: len(ingest.frames()) >= 6, timeout=10, what="both runs' frames at ingestion")
    finally:
        ingest.close()
    # The refused run's frames and the fixed run's: same three seconds, each arrives (ingestion stores it once).
    assert sorted(f.time.isoformat() for f in ingest.frames()) == sorted(2 * [f"2026-11-23T23:00:0{i}+00:00" for i in range(3)])
