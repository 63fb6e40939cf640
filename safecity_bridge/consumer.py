"""The bridge's only input: security events from the SAFE broker (QoS 1, persistent MQTT v5 session).

paho-mqtt runs its network loop in its own thread; each message is handed to the
asyncio loop as an :class:`Inbound` and finished by :meth:`SafeConsumer.ack`, which
the service calls once the event is committed or quarantined. Why each setting (the
smart side's ``ingestion/consumer.py`` gives the same guarantees; the two sides may not
import each other):

* **Persistent session, manual acks**: a stable client id, ``clean_start=False`` and a
  session that never expires (what MQTT 3.1.1's ``clean_session=False`` meant, which
  the bridge used before): while the bridge is down the broker keeps the subscription
  and queues the events. The PUBACK is sent only by :meth:`SafeConsumer.ack`, so a
  crash or an outage leaves the message unacknowledged and the broker re-delivers it.
* **A bound of our own** (``buffer_max_messages``, :mod:`safecity_bridge.inflight`):
  at most that many messages wait in memory between paho and their commit, and the
  same number is announced as Receive Maximum. Neither protocol limit holds on its own
  with mosquitto 2.0.11: under MQTT 3.1.1 its ``max_inflight_messages 100`` let 100
  through while the database stalled, then up to 989 of 1,000 queued events sat in
  memory at once; under v5 it honours Receive Maximum 20 until the first PUBACK, then
  950 of 1,000 did (``tests/safecity_bridge/test_bridge_intake_bound.py``). When the
  bound is full the network thread waits, stops reading the socket, and TCP pushes
  back; the broker's queue keeps the rest. Nothing is dropped.
* **Acks tied to their connection**: after a reconnect the broker re-delivers what was
  unacknowledged, and a PUBACK for a message of the previous connection could
  acknowledge an unrelated one. Such a message is finished without a PUBACK; its
  re-delivered copy is a duplicate (same event id), recognised and acknowledged. The
  check and the PUBACK happen under the lock :meth:`_on_disconnect` takes, so a PUBACK
  is either queued before the connection is declared lost (paho clears its queue when
  it reconnects) or not at all.
* **No deadlock with the loop**: the network thread hands messages over with
  ``call_soon_threadsafe`` and waits only for a place freed by :meth:`ack`, never on
  the loop; :meth:`stop` closes the bound first, so a network thread waiting for a
  place lets go (its message stays unacknowledged) before ``loop_stop()`` joins it from
  the loop's own thread.

The bridge subscribes and acknowledges; it never publishes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.config import MqttSettings, log_connect_failures
from messages.security_event import TOPIC_FILTER
from safecity_bridge.inflight import InFlight

log = logging.getLogger(__name__)

SESSION_NEVER_EXPIRES = 0xFFFFFFFF
"""MQTT v5 Session Expiry Interval meaning "never" (3.2.2.3.2): events queued while the bridge is down wait for it."""

RECEIVE_MAXIMUM_LIMIT = 65_535
"""The largest Receive Maximum MQTT v5 can announce (a two-byte integer)."""


@dataclass(frozen=True)
class Inbound:
    """One received message, held in memory until :meth:`SafeConsumer.ack` finishes it."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    received_mono: float
    redelivered: bool
    generation: int = 0
    """The connection it came on: its PUBACK is sent on that connection or not at all."""
    ticket: int = 0
    """Its place in the in-flight bound, given back by :meth:`SafeConsumer.ack`."""


class SafeConsumer:
    """Subscribes to ``sonopolis-safe/v1/events/+`` and feeds ``deliver`` from paho's thread, ``buffer_max`` messages at most."""

    def __init__(self, settings: MqttSettings, loop: asyncio.AbstractEventLoop, deliver: Callable[[Inbound], None], *, buffer_max: int):
        if not 1 <= buffer_max <= RECEIVE_MAXIMUM_LIMIT:
            raise ValueError(f"buffer_max must be 1..{RECEIVE_MAXIMUM_LIMIT} messages (it is also the Receive Maximum), got {buffer_max}")
        self._settings = settings
        self._loop = loop
        self._deliver = deliver
        self.connected = asyncio.Event()
        self.received = 0
        self.stale_acks = 0
        """Messages finished after their connection was lost: no PUBACK sent, the broker re-delivers them."""
        self.in_flight = InFlight(buffer_max)
        self._lock = threading.Lock()  # the connection generation vs. the PUBACKs sent on it
        self._generation = 0
        self._acking: int | None = None  # the generation whose PUBACKs may be sent; None between connections
        self._stopping = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
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
        self._props = Properties(PacketTypes.CONNECT)
        self._props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
        self._props.ReceiveMaximum = buffer_max
        self._client = client

    # -- paho thread -------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("safe broker refused the connection: %s", reason)
            return
        with self._lock:
            self._generation += 1
            self._acking = self._generation
        client.subscribe(TOPIC_FILTER, qos=self._settings.qos)
        log.info("connected to the safe broker %s:%d (session present=%s)", self._settings.host, self._settings.port, flags.session_present)
        self._to_loop(self.connected.set)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self._acking = None
        if not self._stopping:
            log.warning("disconnected from the safe broker (%s); paho reconnects", reason)
        self._to_loop(self.connected.clear)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.received += 1
        ticket = self.in_flight.admit()  # waits while the bound is full: this thread stops reading (module docstring)
        if ticket is None:  # stopping: unacked, so the broker re-delivers it
            return
        item = Inbound(msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.monotonic(), bool(msg.dup), self._generation, ticket)
        if not self._to_loop(self._deliver, item):
            self.in_flight.release(ticket)

    def _to_loop(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Schedule ``fn`` on the asyncio loop; ``False`` if the loop is already closed (shutdown)."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            return False
        return True

    # -- asyncio side ------------------------------------------------------------
    def start(self) -> None:
        self._client.connect_async(
            self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s,
            clean_start=False, properties=self._props,
        )
        self._client.loop_start()

    def ack(self, item: Inbound) -> None:
        """Finish ``item`` once the event is committed (or quarantined): at-least-once, never lost.

        Gives its place back, and PUBACKs it if it came on the connection still up. A second
        call for the same item does nothing: its packet id may already name another message.
        """
        with self._lock:
            if not self.in_flight.release(item.ticket):
                return
            if item.qos == 0:
                return
            if item.generation != self._acking:
                self.stale_acks += 1
                return
            self._client.ack(item.mid, item.qos)

    def stop(self) -> None:
        """Leave the broker; what is still held here is unacknowledged and re-delivered to the next bridge."""
        self._stopping = True
        self.in_flight.close()
        with self._lock:
            self._acking = None
        self._client.disconnect()
        self._client.loop_stop()
