"""The bridge's only input: security events from the SAFE broker (QoS 1, persistent session).

paho-mqtt runs its network loop in its own thread; each message is handed to the
asyncio loop as an :class:`Inbound` and acknowledged (PUBACK) only by :meth:`ack`,
which the service calls after the event is committed or quarantined. Unacknowledged
messages are re-delivered by the broker after a crash or reconnect (persistent
session, stable client id), and the broker's in-flight limit bounds what can pile up
here. The bridge subscribes and acknowledges; it never publishes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.config import MqttSettings, log_connect_failures
from messages.security_event import TOPIC_FILTER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inbound:
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_mono: float
    redelivered: bool


class SafeConsumer:
    """Subscribes to ``sonopolis-safe/v1/events/+`` and feeds ``deliver`` from paho's thread."""

    def __init__(self, settings: MqttSettings, loop: asyncio.AbstractEventLoop, deliver: Callable[[Inbound], None]):
        self._settings = settings
        self._loop = loop
        self._deliver = deliver
        self.connected = asyncio.Event()
        self.received = 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if settings.username:
            client.username_pw_set(settings.username, settings.password.get_secret_value() if settings.password else None)
        if settings.tls_ca_file:
            client.tls_set(ca_certs=str(settings.tls_ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        log_connect_failures(client, log, "safe broker (bridge)", settings)
        self._client = client

    # -- paho thread -------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("safe broker refused the connection: %s", reason)
            return
        client.subscribe(TOPIC_FILTER, qos=self._settings.qos)
        log.info("connected to the safe broker %s:%d (session present=%s)", self._settings.host, self._settings.port, flags.session_present)
        self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        log.warning("disconnected from the safe broker (%s); paho reconnects", reason)
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        item = Inbound(msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.monotonic(), bool(msg.dup))
        try:
            self._loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # loop closed during shutdown: unacked, so the broker re-delivers
            pass

    # -- asyncio side ------------------------------------------------------------
    def start(self) -> None:
        self._client.connect_async(self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s)
        self._client.loop_start()

    def ack(self, item: Inbound) -> None:
        """PUBACK once the event is committed (or quarantined): at-least-once, never lost."""
        if item.qos > 0:
            self._client.ack(item.mid, item.qos)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
