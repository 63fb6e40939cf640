"""Helpers shared by the bridge's tests and benchmark: settings, publisher, feed reader.

Everything here talks to real services: a private Mosquitto, the real PostgreSQL, the
bridge's real HTTP port. The feed reader is a plain SSE client over httpx.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.config import MqttSettings
from sonopolis.embedded import free_port
from safecity_bridge.settings import LegalDeclaration, SafeSettings, SensorPosition

DECLARATION = LegalDeclaration(
    legal_basis="Test fixture: arrêté fictif n°TEST-0001 (tests only)",
    dpia_reference="AIPD-TEST-0001",
    declared_by="test suite",
)

# Four sensors around a square in Saint-Étienne, ~200 m apart.
SENSORS = [
    SensorPosition(sensor_id="s-north", latitude=45.4410, longitude=4.3870),
    SensorPosition(sensor_id="s-east", latitude=45.4395, longitude=4.3895),
    SensorPosition(sensor_id="s-south", latitude=45.4380, longitude=4.3870),
    SensorPosition(sensor_id="s-west", latitude=45.4395, longitude=4.3845),
]


def make_settings(dsn: str, broker_port: int, *, operators: list[Any] | None = None, **overrides: Any) -> SafeSettings:
    values: dict[str, Any] = {
        "declaration": DECLARATION,
        "mqtt": MqttSettings(host="127.0.0.1", port=broker_port, client_id=f"bridge-{uuid.uuid4().hex[:8]}"),
        "db": {"dsn": dsn},
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "operators": operators or [],
        "sensors": SENSORS,
    }
    values.update(overrides)
    return SafeSettings(**values)


def event(sensor_id: str = "s-north", cls: str = "gunshot", onset: datetime | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "schema": "sonopolis.security-event/1",
        "event_id": str(kw.pop("event_id", uuid.uuid4())),
        "sensor_id": sensor_id,
        "class": cls,
        "confidence": kw.pop("confidence", 0.93),
        "onset": (onset or datetime.now(timezone.utc)).isoformat(),
        "level_db": kw.pop("level_db", 118.0),
        **kw,
    }


class Publisher:
    """An edge agent's side of the safe broker (QoS 1), for tests only."""

    def __init__(self, port: int):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{uuid.uuid4().hex[:8]}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, payload: dict[str, Any] | bytes, topic: str | None = None) -> float:
        if isinstance(payload, dict):
            topic = topic or f"sonopolis-safe/v1/events/{payload['sensor_id']}"
            data = json.dumps(payload).encode()
        else:
            data = payload
        assert topic is not None
        t = time.monotonic()
        self.client.publish(topic, data, qos=1).wait_for_publish(5)
        return t

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class FeedReader:
    """Reads the bridge's SSE feed on a thread; each message gets its arrival time."""

    def __init__(self, url: str, auth: tuple[str, str] | None):
        self.url, self.auth = url, auth
        self.messages: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self.status: int | None = None
        self._connected = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "FeedReader":
        self._thread.start()
        if not self._connected.wait(20):
            raise TimeoutError("feed did not connect")
        return self

    def _run(self) -> None:
        with httpx.Client(auth=self.auth, timeout=httpx.Timeout(5.0, read=None)) as client:
            with client.stream("GET", self.url, params={"replay": "false"}) as resp:
                self.status = resp.status_code
                data: list[str] = []
                for line in resp.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        msg = json.loads("\n".join(data))
                        data = []
                        if "operator" in msg and "type" not in msg:
                            self._connected.set()  # the hello message
                            continue
                        self.messages.put((time.monotonic(), msg))
                if resp.status_code != 200:
                    self._connected.set()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        for _, m in self.seen:
            if pred(m):
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching feed message within {timeout} s; saw {[m.get('type') for _, m in self.seen]}")
            try:
                t, m = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append((t, m))
            if pred(m):
                return m

    def stop(self) -> None:
        self._stop = True


def past(seconds: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


class WebhookReceiver:
    """A control-room or VMS endpoint on this machine: keeps each JSON body posted to it and its delivery id."""

    def __init__(self, delivery_header: str = "X-Sonopolis-Delivery") -> None:
        received = self.received = []
        deliveries = self.deliveries = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                deliveries.append(self.headers[delivery_header])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def incident_ids(self) -> list[str]:
        return [m["incident"]["incident_id"] for m in self.received]

    def close(self) -> None:
        self.server.shutdown()
