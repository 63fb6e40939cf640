"""The smart broker side of ingestion: a persistent MQTT v5 session with manual acks.

Why each setting:

* **QoS 1 + persistent session** (``clean_start=False``, a stable client id and a
  session expiry interval): while ``sonopolis ingest`` is down or restarting, the
  broker keeps our subscription and queues what sensors publish.
* **Manual acks** (``manual_ack_set(True)``): paho would otherwise PUBACK as soon as
  a message is read. Here the service calls :meth:`MqttConsumer.ack` only after the
  message's rows (or its quarantine entry) are committed, so a crash or a database
  outage leaves the message unacknowledged and the broker redelivers it.
* **Receive Maximum** = the in-memory buffer size: a broker that honours it never has
  more unacknowledged messages in flight to us than we can hold, so when the database
  stalls, the buffer fills, acks stop and the broker stops sending (back-pressure,
  bounded memory) instead of us growing without limit. Mosquitto 2.0.11 (Debian 12)
  honours it only until the first PUBACK: with Receive Maximum 200 and 1 000 messages
  queued, it sent 200, then all 1 000 once 100 were acked. The bounded queue holds the
  line then: the network thread blocks on it, stops reading, and TCP pushes back, so
  at most the queue, the batch being written and one message wait in memory.
* Acks are tagged with the connection generation: after a reconnect the broker
  resends unacked messages with packet ids of the new connection, so an ack for a
  message received on an old connection is never sent (it could acknowledge an
  unrelated message); the redelivered copy is written idempotently and acked.

Throughput (``bench/ingest.py``): stock paho reads one packet per ``select()`` with
three to four ``recv()`` calls per message (command byte, each length byte, body) and
sends every PUBACK with its own wake-up and ``send()``. :class:`_BatchingClient`
reads the socket in 256 KiB chunks and sends the PUBACKs of a committed batch as one
write, which about halves the CPU per message of the receive path. Both go through
paho's own packet state machine; only the socket calls are batched.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.config import MqttSettings, log_connect_failures
from ingestion.metrics import IngestMetrics
from messages.level_frame import TOPIC_FILTER

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message, waiting for its commit and ack."""

    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes
    received_ts: float
    """``time.time()`` at reception (a float: a datetime per message costs CPU for nothing)."""

    @property
    def received_at(self) -> datetime:
        return datetime.fromtimestamp(self.received_ts, timezone.utc)


_READ_CHUNK = 256 * 1024
_PUBACK = 0x40
_MAX_ACKS_PER_WRITE = 8192


class _BatchingClient(mqtt.Client):
    """paho's client with chunked socket reads and one write for many PUBACKs.

    Reads: :meth:`_sock_recv` serves paho's small reads from a buffer filled by one
    ``recv(256 KiB)`` per :meth:`loop_read`, and :meth:`loop_read` handles every
    packet of that buffer before returning, so nothing is left in the buffer when
    the loop goes back to ``select()`` (a partial packet is already in paho's own
    packet state and completes when the socket is readable again).

    Acks: :meth:`ack_many` queues the PUBACKs of many messages as one packet (one
    wake-up of the network thread, one ``send``). A v5 PUBACK with reason "success"
    and no properties is the 4 bytes ``0x40 0x02 <mid>``, the same as paho's own.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._rsock: object = None
        self._may_recv = False

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock:  # new connection: a stale buffer is worthless
            self._rbuf, self._rpos, self._rsock = b"", 0, self._sock
        if self._rpos >= len(self._rbuf):
            if not self._may_recv:
                raise BlockingIOError()
            data = super()._sock_recv(_READ_CHUNK)
            self._may_recv = False
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        end = min(self._rpos + bufsize, len(self._rbuf))
        out = self._rbuf[self._rpos:end]
        self._rpos = end
        return out

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        self._may_recv = True
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and self._rsock is self._sock and self._rpos < len(self._rbuf):
            rc = super().loop_read(max_packets)
        self._may_recv = False
        return rc

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK QoS 1 messages ``mids`` in one queued write."""
        for i in range(0, len(mids), _MAX_ACKS_PER_WRITE):
            data = b"".join([struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids[i:i + _MAX_ACKS_PER_WRITE]])
            self._packet_queue(_PUBACK, data, 0, 1)


class MqttConsumer:
    """Subscribes to level topics and feeds a bounded queue; acks on request."""

    def __init__(
        self,
        settings: MqttSettings,
        inbox: "queue.Queue[Inbound]",
        metrics: IngestMetrics,
        *,
        receive_maximum: int,
        session_expiry_s: int,
        topic_filter: str = TOPIC_FILTER,
    ):
        self.settings = settings
        self.inbox = inbox
        self.metrics = metrics
        self.topic_filter = topic_filter
        self._generation = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        """Set when the broker confirmed the subscription (SUBACK) on the current connection."""
        client = _BatchingClient(
            mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv5,
        )
        client.manual_ack_set(True)
        if settings.username:
            client.username_pw_set(settings.username, settings.password.get_secret_value() if settings.password else None)
        if settings.tls_ca_file:
            client.tls_set(ca_certs=str(settings.tls_ca_file))
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        log_connect_failures(client, log, "smart broker (ingest)", settings)
        self._props = Properties(PacketTypes.CONNECT)
        self._props.SessionExpiryInterval = session_expiry_s
        self._props.ReceiveMaximum = max(1, min(receive_maximum, 65_535))
        self.client = client

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Connect in the background (retrying until the broker is there) and start the loop."""
        self.client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
            clean_start=False, properties=self._props,
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly; unacked messages stay with the broker for the next start."""
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        self.metrics.connected.set(0)

    # ---------------------------------------------------------------- acks

    @property
    def generation(self) -> int:
        return self._generation

    def ack(self, items: list[Inbound]) -> int:
        """PUBACK the committed ``items`` received on the current connection; return how many."""
        n = 0
        # The check and the queueing of the PUBACKs under the lock the connection callbacks
        # take: a PUBACK is queued while its connection is up (paho drops what is queued when
        # it reconnects) or not at all, never sent on a newer connection where its packet id
        # may name another message. (Checked, then queued unlocked, it needed a reconnect in
        # between; paho waits at least 1 s before one, so the window was only theoretical.)
        with self._lock:
            if not self.connected.is_set():
                return 0
            current = self._generation
            mids = [item.mid for item in items if item.qos == 1 and item.generation == current]
            # Counted *before* the PUBACKs leave: once the broker has them it may send new
            # messages at once, and ``received - acked`` (the in-flight figure dashboards and
            # the outage test read) must never exceed Receive Maximum because of our own
            # bookkeeping order. A PUBACK lost with the connection changes nothing: the
            # broker redelivers, and the copy is written idempotently and counted again.
            self.metrics.acked.inc(len(mids))
            if mids:
                self.client.ack_many(mids)
                n = len(mids)
            for item in items:  # QoS 2 is not used on the smart path; kept correct anyway
                if item.qos == 2 and item.generation == current:
                    self.metrics.acked.inc()
                    if self.client.ack(item.mid, item.qos) == mqtt.MQTT_ERR_SUCCESS:
                        n += 1
        return n

    # ---------------------------------------------------------------- callbacks (network thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("smart broker refused the connection: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
        client.subscribe(self.topic_filter, qos=self.settings.qos)
        self.connected.set()
        self.metrics.connected.set(1)
        log.info(
            "connected to smart broker %s:%d as %s (session present: %s)",
            self.settings.host, self.settings.port, self.settings.client_id, flags.session_present,
        )

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("smart broker refused the subscription to %s: %s", self.topic_filter, failed)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._lock:  # see ack()
            self.connected.clear()
        self.subscribed.clear()
        self.metrics.connected.set(0)
        if not self._stopping.is_set():
            log.warning("disconnected from smart broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        item = Inbound(self._generation, msg.mid, msg.qos, msg.topic, msg.payload, time.time())
        self.metrics.messages.inc()
        # Receive Maximum should keep the broker within the queue size; mosquitto 2.0.11
        # overshoots it (module docstring), and blocking here stops reading from the
        # socket (TCP back-pressure).
        while not self._stopping.is_set():
            try:
                self.inbox.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
