"""The brokers' access rules, proven against real Mosquitto processes.

Both brokers run from the deployment's own files (``deploy/mosquitto/<side>/``:
TLS listener, password file, ACL) with secrets made by ``deploy/make-secrets.sh``.
Clients speak MQTT v5 so that refusals come back as reason codes (CONNACK, PUBACK).
Mosquitto 2.0's ACL grants every SUBSCRIBE and filters at delivery (the SUBACK says
QoS 1 even for a forbidden filter), so "cannot read" is proven by non-delivery: the
forbidden reader subscribes, a legitimate publisher sends, a legitimate reader
receives it (positive control), and only then is the forbidden reader checked empty.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from tests.system.deployed import DeployedBroker, make_secrets

SENSOR_A = "ste-01-01"
SENSOR_B = "ste-01-02"
LEVELS = "sonopolis/v1/levels/"
EVENTS = "sonopolis-safe/v1/events/"
NOT_AUTHORIZED = 135
SETTLE_S = 0.7
"""How long to keep listening for a message that must not come, after the positive control arrived."""


class Probe:
    """A paho MQTT v5 client over TLS that records every acknowledgement synchronously."""

    def __init__(self, broker: DeployedBroker, user: str | None, password: str | None):
        self.broker = broker
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(broker.ca_file))
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connack: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: list[tuple[str, bytes]] = []
        self._acks: dict[int, list[ReasonCode]] = {}
        self._cond = threading.Condition()
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ack(mid, list(rcs))
        self.client.on_publish = lambda c, u, mid, rc, p: self._ack(mid, [rc])

    def _ack(self, mid: int, codes: list[ReasonCode]) -> None:
        with self._cond:
            self._acks[mid] = codes
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload))
            self._cond.notify_all()

    def connect(self) -> ReasonCode:
        """CONNACK reason code; a refused client is left disconnected (no retry loop)."""
        self.client.connect("127.0.0.1", self.broker.port, keepalive=30)
        self.client.loop_start()
        try:
            rc = self.connack.get(timeout=10)
        except queue.Empty:
            self.close()
            raise AssertionError("no CONNACK within 10 s") from None
        if rc.is_failure:
            self.close()
        return rc

    def _wait_ack(self, mid: int) -> list[ReasonCode]:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._acks, timeout=10):
                raise AssertionError(f"no acknowledgement for message id {mid} within 10 s")
            return self._acks[mid]

    def subscribe(self, topic: str) -> int:
        """Granted QoS (0-2) or the SUBACK failure reason code (135 = not authorized)."""
        _, mid = self.client.subscribe(topic, qos=1)
        return self._wait_ack(mid)[0].value

    def try_subscribe(self, topic: str) -> None:
        """Subscribe to a filter that must deliver nothing (refused now, or filtered at delivery)."""
        assert self.subscribe(topic) in (1, NOT_AUTHORIZED), topic

    def publish(self, topic: str, payload: str | bytes) -> int:
        """PUBACK reason code of a QoS 1 publish (0 = accepted, 135 = not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        return self._wait_ack(info.mid)[0].value

    def wait_for(self, topic: str, payload: bytes, timeout: float = 10) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: (topic, payload) in self.messages, timeout=timeout):
                raise AssertionError(f"positive control {topic} never arrived; got {[t for t, _ in self.messages]}")

    def topics_after(self, settle: float = SETTLE_S) -> list[str]:
        time.sleep(settle)
        with self._cond:
            return [t for t, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, DeployedBroker]]:
    root = tmp_path_factory.mktemp("deployed-brokers")
    secrets = make_secrets(root / "secrets", [SENSOR_A, SENSOR_B])
    started: dict[str, DeployedBroker] = {}
    try:
        for side in ("smart", "safe"):
            started[side] = DeployedBroker(side, secrets, root / side).start()
        yield started
    finally:
        for broker in started.values():
            broker.stop()


@pytest.fixture
def probes() -> Iterator[list[Probe]]:
    opened: list[Probe] = []
    yield opened
    for p in opened:
        p.close()


def connected(probes: list[Probe], broker: DeployedBroker, user: str, secret: str) -> Probe:
    p = Probe(broker, user, broker.password(secret))
    rc = p.connect()
    assert not rc.is_failure, f"{user} could not connect to the {broker.side} broker: {rc}"
    probes.append(p)
    return p


def level_payload(sensor: str) -> bytes:
    return json.dumps({"schema": "sonopolis.level-frame/1", "sensor_id": sensor, "marker": uuid.uuid4().hex}).encode()


def event_payload(sensor: str) -> bytes:
    return json.dumps(
        {
            "schema": "sonopolis.security-event/1",
            "event_id": str(uuid.uuid4()),
            "sensor_id": sensor,
            "class": "gunshot",
            "confidence": 0.97,
            "onset": datetime.now(timezone.utc).isoformat(),
            "level_db": 128.0,
        }
    ).encode()


@pytest.mark.parametrize("side", ["smart", "safe"])
def test_anonymous_and_wrong_password_clients_are_refused(brokers: dict[str, DeployedBroker], side: str) -> None:
    broker = brokers[side]
    anonymous = Probe(broker, None, None).connect()
    assert anonymous.is_failure and anonymous.value == NOT_AUTHORIZED, anonymous
    wrong = Probe(broker, SENSOR_A, "not-the-password").connect()
    assert wrong.is_failure and wrong.value == NOT_AUTHORIZED, wrong  # Mosquitto 2 answers 135 for both
    right = Probe(broker, SENSOR_A, broker.password(f"mqtt-{side}-{SENSOR_A}-password"))
    assert not right.connect().is_failure, "positive control: the sensor's own password is accepted"
    right.close()


def test_smart_credentials_do_not_exist_on_the_safe_broker(brokers: dict[str, DeployedBroker]) -> None:
    safe = brokers["safe"]
    smart_pw = brokers["smart"].password
    ingest = Probe(safe, "svc.ingest", smart_pw("mqtt-smart-ingest-password")).connect()
    assert ingest.is_failure, "the ingest account must not exist on the safe broker"
    sensor_smart_pw = Probe(safe, SENSOR_A, smart_pw(f"mqtt-smart-{SENSOR_A}-password")).connect()
    assert sensor_smart_pw.is_failure, "a sensor's smart password must not open the safe broker"


def test_ingest_cannot_subscribe_to_or_receive_safe_topics(brokers: dict[str, DeployedBroker], probes: list[Probe]) -> None:
    smart = brokers["smart"]
    ingest = connected(probes, smart, "svc.ingest", "mqtt-smart-ingest-password")
    ingest.try_subscribe("sonopolis-safe/#")
    assert ingest.subscribe(LEVELS + "+") == 1, "positive control: ingest reads the levels"
    sensor = connected(probes, smart, SENSOR_A, f"mqtt-smart-{SENSOR_A}-password")
    # Nobody can even put a safe-path topic on the smart broker.
    assert sensor.publish(EVENTS + SENSOR_A, event_payload(SENSOR_A)) == NOT_AUTHORIZED
    control = level_payload(SENSOR_A)
    assert sensor.publish(LEVELS + SENSOR_A, control) == 0
    ingest.wait_for(LEVELS + SENSOR_A, control)
    assert ingest.topics_after() == [LEVELS + SENSOR_A]


def test_ingest_publishes_nothing(brokers: dict[str, DeployedBroker], probes: list[Probe]) -> None:
    smart = brokers["smart"]
    ingest = connected(probes, smart, "svc.ingest", "mqtt-smart-ingest-password")
    assert ingest.subscribe(LEVELS + "+") == 1
    for topic in (LEVELS + SENSOR_A, LEVELS + "svc.ingest", "sonopolis/v1/anything"):
        assert ingest.publish(topic, b"{}") == NOT_AUTHORIZED, topic
    assert ingest.topics_after() == []


def test_sensor_publishes_only_its_own_levels_and_reads_nothing(brokers: dict[str, DeployedBroker], probes: list[Probe]) -> None:
    smart = brokers["smart"]
    ingest = connected(probes, smart, "svc.ingest", "mqtt-smart-ingest-password")
    assert ingest.subscribe(LEVELS + "+") == 1
    sensor = connected(probes, smart, SENSOR_A, f"mqtt-smart-{SENSOR_A}-password")
    other = connected(probes, smart, SENSOR_B, f"mqtt-smart-{SENSOR_B}-password")
    assert sensor.publish(LEVELS + SENSOR_B, level_payload(SENSOR_B)) == NOT_AUTHORIZED
    assert sensor.publish(LEVELS + "svc.ingest", b"{}") == NOT_AUTHORIZED
    sensor.try_subscribe(LEVELS + "+")
    sensor.try_subscribe("#")
    own, theirs = level_payload(SENSOR_A), level_payload(SENSOR_B)
    assert sensor.publish(LEVELS + SENSOR_A, own) == 0
    assert other.publish(LEVELS + SENSOR_B, theirs) == 0
    ingest.wait_for(LEVELS + SENSOR_A, own)
    ingest.wait_for(LEVELS + SENSOR_B, theirs)
    assert sorted(ingest.topics_after()) == [LEVELS + SENSOR_A, LEVELS + SENSOR_B], "the impersonated frame must not arrive"
    assert sensor.topics_after(0) == [], "a sensor reads nobody's levels, not even its own"


def test_bridge_cannot_publish_anything(brokers: dict[str, DeployedBroker], probes: list[Probe]) -> None:
    safe = brokers["safe"]
    bridge = connected(probes, safe, "svc.bridge", "mqtt-safe-bridge-password")
    assert bridge.subscribe(EVENTS + "+") == 1
    for topic in (EVENTS + SENSOR_A, EVENTS + "svc.bridge", "sonopolis/v1/levels/" + SENSOR_A, "sonopolis-safe/v1/alerts"):
        assert bridge.publish(topic, event_payload(SENSOR_A)) == NOT_AUTHORIZED, topic
    sensor = connected(probes, safe, SENSOR_A, f"mqtt-safe-{SENSOR_A}-password")
    control = event_payload(SENSOR_A)
    assert sensor.publish(EVENTS + SENSOR_A, control) == 0
    bridge.wait_for(EVENTS + SENSOR_A, control)
    assert bridge.topics_after() == [EVENTS + SENSOR_A]


def test_forged_safe_events_never_reach_the_bridge(brokers: dict[str, DeployedBroker], probes: list[Probe]) -> None:
    safe = brokers["safe"]
    smart_pw = brokers["smart"].password
    bridge = connected(probes, safe, "svc.bridge", "mqtt-safe-bridge-password")
    assert bridge.subscribe(EVENTS + "+") == 1
    # Wrong credentials: refused at CONNECT, before any PUBLISH can be sent.
    for user, password in ((None, None), (SENSOR_B, "guessed"), (SENSOR_B, smart_pw(f"mqtt-smart-{SENSOR_B}-password"))):
        assert Probe(safe, user, password).connect().is_failure, user
    # Right credentials, wrong identity: sensor A forging sensor B's event.
    forger = connected(probes, safe, SENSOR_A, f"mqtt-safe-{SENSOR_A}-password")
    assert forger.publish(EVENTS + SENSOR_B, event_payload(SENSOR_B)) == NOT_AUTHORIZED
    # No sensor can listen to the safe path either.
    forger.try_subscribe(EVENTS + "+")
    forger.try_subscribe("#")
    genuine = event_payload(SENSOR_B)
    sensor_b = connected(probes, safe, SENSOR_B, f"mqtt-safe-{SENSOR_B}-password")
    assert sensor_b.publish(EVENTS + SENSOR_B, genuine) == 0
    bridge.wait_for(EVENTS + SENSOR_B, genuine)
    bridge.topics_after()
    received = [(t, p) for t, p in bridge.messages]
    assert received == [(EVENTS + SENSOR_B, genuine)], "only the genuine event reaches the bridge"
    assert forger.topics_after(0) == [], "another sensor never hears a security event"


@pytest.mark.parametrize("side", ["smart", "safe"])
def test_health_account_reads_broker_uptime_only(brokers: dict[str, DeployedBroker], probes: list[Probe], side: str) -> None:
    broker = brokers[side]
    health = connected(probes, broker, "svc.health", f"mqtt-{side}-health-password")
    assert health.subscribe("$SYS/broker/uptime") == 1
    with health._cond:
        assert health._cond.wait_for(lambda: any(t == "$SYS/broker/uptime" for t, _ in health.messages), timeout=15)
    prefix = LEVELS if side == "smart" else EVENTS
    reader_user, reader_secret = ("svc.ingest", "mqtt-smart-ingest-password") if side == "smart" else ("svc.bridge", "mqtt-safe-bridge-password")
    reader = connected(probes, broker, reader_user, reader_secret)
    assert reader.subscribe(prefix + "+") == 1
    health.try_subscribe(prefix + "+")
    assert health.publish(prefix + "svc.health", b"{}") == NOT_AUTHORIZED
    sensor = connected(probes, broker, SENSOR_A, f"mqtt-{side}-{SENSOR_A}-password")
    control = level_payload(SENSOR_A) if side == "smart" else event_payload(SENSOR_A)
    assert sensor.publish(prefix + SENSOR_A, control) == 0
    reader.wait_for(prefix + SENSOR_A, control)
    assert set(health.topics_after()) == {"$SYS/broker/uptime"}


def test_deployed_brokers_refuse_plain_tcp(brokers: dict[str, DeployedBroker]) -> None:
    """The listener is TLS only: a client without TLS never gets a CONNACK."""
    plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plain", protocol=mqtt.MQTTv5)
    got: list[ReasonCode] = []
    plain.on_connect = lambda c, u, f, rc, p: got.append(rc)
    plain.connect("127.0.0.1", brokers["smart"].port)
    for _ in range(10):
        plain.loop(timeout=0.1)
    plain.disconnect()
    assert got == [], "a cleartext CONNECT must not be answered"


def test_secrets_dir_holds_no_world_writable_or_plain_ca_key_leak(brokers: dict[str, DeployedBroker]) -> None:
    secrets: Path = brokers["smart"].secrets_dir
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    assert oct((secrets / "ca.key").stat().st_mode & 0o777) == "0o600"
    hashed = (secrets / "mosquitto-smart.passwd").read_text()
    assert brokers["smart"].password("mqtt-smart-ingest-password") not in hashed
    assert all(line.split(":", 1)[1].startswith("$7$") for line in hashed.splitlines()), "PBKDF2-SHA512 hashes"
