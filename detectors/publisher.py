"""One MQTT connection per broker, fed from the on-disk outbox.

The edge agent holds two of these with *separate* settings (host, client id,
credentials): ``smart`` for level frames and ``safe`` for security events. A link
never looks at the other channel's rows of the outbox, so nothing queued for one
broker can leave through the other.

Delivery: rows are published at QoS 1 only while connected and deleted when the
broker's PUBACK arrives; after a disconnect the unacknowledged rows are sent again
(receivers are idempotent: frames on (sensor, time), events on ``event_id``). When
several frames wait (catching up after an outage) they leave as one ``LevelBatch``.
paho's network thread only records connection state and acknowledged message ids;
the outbox is touched from the agent's thread alone.

In-flight window: the link speaks MQTT v5 so that the broker's CONNACK says how many
unacknowledged QoS>0 messages it accepts (Receive Maximum; mosquitto announces its
``max_inflight_messages``, 20 by default), and never has more than that in flight.
mosquitto 2.0 answers a QoS 2 message beyond its quota with a PUBREC that paho cannot
tell from a success (reason 0x97, ignored by paho; a bare PUBREC in v3.1.1), drops it,
and completes the flow: with a window of 50 against a limit of 2, 186 of 200 queued
events were deleted from the outbox as delivered and never reached a subscriber.

Refusals: a v5 PUBACK carries a reason code, and a row is deleted only when it says the
broker took the message (:mod:`detectors.refusal`). mosquitto 2.0 answers a publish its
ACL denies with PUBACK 0x87 Not authorized and keeps the connection up. That one, and
any other permanent refusal, moves the rows to the outbox's refused table (an ERROR names
channel, topic and reason); a transient one holds the channel back and sends them again.
Only QoS 1 shows refusals: paho ignores the reason code of a QoS 2 PUBREC and reports the
flow as a success.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from common.config import MqttSettings, log_connect_failures
from detectors import refusal
from detectors.outbox import Channel, Outbox, Pending
from messages.level_frame import LevelBatch, LevelFrame

log = logging.getLogger(__name__)

CATCHUP_BATCH_FRAMES = 300
"""Frames per ``LevelBatch`` when replaying a backlog (~200 kB per message)."""
MAX_IN_FLIGHT = 50
"""Our own cap on unacknowledged messages; a broker announcing less lowers it per connection."""
MAX_ROWS_PER_PUMP = 2 * CATCHUP_BATCH_FRAMES
"""A pump runs in the agent's audio loop: 600 frames per call (~25 ms of validating and
encoding) still replays 6 000 frames a second at 10 blocks a second, so an 8-hour
backlog drains in seconds without stalling the audio (15 000 rows in one call took
0.4 s)."""
REFUSAL_LOG_EVERY_S = 60.0
"""The same refusal (topic, reason) is logged at most once a minute: a live sensor meets it every second."""


def in_flight_window(ours: int, connack_properties: Any) -> int:
    """How many QoS>0 messages may be unacknowledged at once on this connection.

    A CONNACK without Receive Maximum allows 65 535 (MQTT 5.0, 3.2.2.3.3); zero is a
    protocol error that would stall the link, so the window never drops below one.
    """
    announced = getattr(connack_properties, "ReceiveMaximum", None)
    if announced is None:
        return ours
    return max(1, min(ours, int(announced)))


def drop_paho_resends(client: mqtt.Client) -> None:
    """Forget the messages paho holds from an earlier connection; the outbox sends them again.

    At a CONNACK paho resends every message it still holds, *ignoring its own in-flight
    limit* (paho 2.2 does not count them), on top of what the pump sends again from the
    outbox after a reconnect. Each flap before the broker acknowledged added a window:
    against Receive Maximum 2: 2, 2, 4 and 6 PUBLISHes on four successive connections, and
    paho's store grew by 2 each time. The clean-start session keeps nothing on the broker
    either, so the outbox is the one queue. Called from ``on_connect``, which paho runs
    before those resends, under the lock paho's own publish takes.
    """
    with client._out_message_mutex:  # noqa: SLF001 - see docstring
        client._out_messages.clear()  # noqa: SLF001
        client._inflight_messages = 0  # noqa: SLF001


def cap_paho_in_flight(client: mqtt.Client, limit: int) -> None:
    """Set paho's own in-flight limit on a live connection.

    paho's public setter refuses once a connection is open, but the limit is only
    known from the CONNACK. Lowering it only makes paho queue more messages; it is never
    set to 0 (paho's "unlimited"), the one change paho warns may misbehave.
    """
    if limit < 1:
        raise ValueError(f"in-flight limit must be at least 1, not {limit}")
    client._max_inflight_messages = limit  # noqa: SLF001 - see docstring


class Flight(NamedTuple):
    """One message handed to paho: its topic (for the logs) and the outbox rows it carries."""

    topic: str
    ids: list[int]


class BrokerLink:
    """Publishes one outbox channel to one broker; ``pump()`` from the agent's loop.

    Counters, in rows: ``sent`` handed to the broker, ``delivered`` confirmed by it (and
    deleted from the outbox), ``refused`` set aside because it refused them.
    """

    def __init__(self, channel: Channel, settings: MqttSettings, outbox: Outbox):
        self.channel = channel
        self.settings = settings
        self.outbox = outbox
        self.sent = 0
        self.delivered = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._connected = False
        self._acked: dict[int, Any] = {}  # mid -> the broker's reason code
        self._in_flight: dict[int, Flight] = {}  # mid -> what it carries
        self._tries: dict[int, int] = {}  # outbox id -> transient refusals so far
        self._resume_at = 0.0  # after a transient refusal: monotonic time before which nothing new leaves
        self._last_logged: tuple[str, str] | None = None
        self._logged_at = 0.0
        if settings.qos == 2:
            log.warning("%s link at QoS 2: a message the broker refuses (ACL, quota) is taken for delivered, "
                        "as paho ignores the reason code of PUBREC; QoS 1 keeps refused messages", channel)
        self._window = MAX_IN_FLIGHT  # min(ours, the broker's Receive Maximum) of the current connection
        self._connection = 0  # CONNACKs so far (network thread)
        self._pumped_connection = 0  # the connection the pump's _in_flight belongs to (agent thread)
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,  # v3.1.1 has no Receive Maximum: the broker's limit would be unknown
        )
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        if settings.tls_ca_file:
            self._client.tls_set(ca_certs=str(settings.tls_ca_file))
        self._client.max_inflight_messages_set(MAX_IN_FLIGHT)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        log_connect_failures(self._client, log, f"{channel} broker (edge)", settings)
        self._client.on_publish = self._on_publish

    # paho network thread -------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("%s broker refused the connection: %s", self.channel, reason)
            return
        window = in_flight_window(MAX_IN_FLIGHT, properties)
        drop_paho_resends(client)
        cap_paho_in_flight(client, window)
        with self._lock:
            self._connected = True
            self._window = window
            self._connection += 1  # the pump forgets what it had in flight: it leaves again from the outbox
        if window < MAX_IN_FLIGHT:
            log.info("%s broker accepts %d unacknowledged messages (Receive Maximum); in-flight window lowered from %d",
                     self.channel, window, MAX_IN_FLIGHT)
        log.info("%s broker connected (%s:%d)", self.channel, self.settings.host, self.settings.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self._connected = False
        log.warning("%s broker disconnected (%s); messages stay queued", self.channel, reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            self._acked[mid] = reason

    # agent thread ---------------------------------------------------------------
    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def start(self) -> None:
        # clean start and no session expiry: as v3.1.1 clean_session, the outbox is the only queue.
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s, clean_start=True)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def pump(self) -> int:
        """Settle what the broker answered, publish what waits; returns rows sent."""
        with self._lock:
            connected = self._connected
            window = self._window
            connection = self._connection
            acked, self._acked = self._acked, {}
        self._settle(acked)
        if connection != self._pumped_connection:
            # A reconnect, even one between two pumps: paho dropped what was in flight
            # (drop_paho_resends), so those rows leave again from the outbox.
            self._in_flight.clear()
            self._pumped_connection = connection
        if not connected:
            return 0  # what is in flight is forgotten at the next CONNACK (above), and sent again
        room = window - len(self._in_flight)
        if room <= 0 or self._held_back():
            return 0
        # Rows leave in id order and new rows get higher ids, so everything up to the
        # newest row in flight is in flight (or acknowledged and gone). A row kept after a
        # transient refusal breaks that, but then nothing leaves until none is in flight.
        newest_in_flight = max((f.ids[-1] for f in self._in_flight.values()), default=0)
        rows = self.outbox.pending(self.channel, limit=min(room * CATCHUP_BATCH_FRAMES, MAX_ROWS_PER_PUMP), after=newest_in_flight)
        sent = 0
        for group in self._messages(rows)[:room]:
            topic, payload, ids = group
            info = self._client.publish(topic, payload, qos=self.settings.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("%s publish not accepted (rc=%s); will retry", self.channel, info.rc)
                break
            if self.settings.qos == 0:
                self.outbox.ack(self.channel, ids)
                self.delivered += len(ids)
            else:
                self._in_flight[info.mid] = Flight(topic, ids)
            sent += len(ids)
        self.sent += sent
        return sent

    def _settle(self, acked: dict[int, Any]) -> None:
        """Delete the rows the broker took; set aside or keep for a retry those it refused."""
        done: list[int] = []
        for mid, reason in acked.items():
            flight = self._in_flight.pop(mid, None)
            if flight is None:
                continue  # sent on an earlier connection: its rows are sent again, and settled then
            tries = max((self._tries.get(i, 0) for i in flight.ids), default=0)
            verdict = refusal.verdict(reason, tries)
            if verdict == "delivered":
                done += flight.ids
            elif verdict == "retry":
                self._retry_later(flight, reason, tries + 1)
            else:
                self._set_aside(flight, reason)
        if self._tries:
            for i in done:
                self._tries.pop(i, None)
        self.outbox.ack(self.channel, done)
        self.delivered += len(done)

    def _retry_later(self, flight: Flight, reason: Any, tries: int) -> None:
        """A transient refusal: the rows stay queued and the channel pauses (see ``_held_back``)."""
        for i in flight.ids:
            self._tries[i] = tries
        delay = refusal.retry_delay(tries)
        self._resume_at = max(self._resume_at, time.monotonic() + delay)
        log.warning("%s broker refused %d message(s) on %s: %s; kept queued, sent again in %.0f s (refusal %d of %d)",
                    self.channel, len(flight.ids), flight.topic, refusal.describe(reason), delay, tries, refusal.RETRY_ROUNDS)

    def _held_back(self) -> bool:
        """After a transient refusal nothing new leaves until the pause is over and nothing is
        in flight: the next pump then starts again from the oldest row, the refused one."""
        if not self._resume_at:
            return False
        if self._in_flight or time.monotonic() < self._resume_at:
            return True
        self._resume_at = 0.0
        return False

    def _set_aside(self, flight: Flight, reason: Any) -> None:
        """A permanent refusal (or one too many): the rows move to the outbox's refused table."""
        why = refusal.describe(reason)
        self.refused += self.outbox.refuse(self.channel, flight.ids, why)
        for i in flight.ids:
            self._tries.pop(i, None)
        now = time.monotonic()
        if self._last_logged == (flight.topic, why) and now - self._logged_at < REFUSAL_LOG_EVERY_S:
            return
        self._last_logged, self._logged_at = (flight.topic, why), now
        hint = (f"; may broker user {self.settings.username!r} publish there (ACL, sensor id)?"
                if refusal.code(reason) == refusal.NOT_AUTHORIZED else "")
        log.error("%s broker refused %d message(s) on %s: %s; %d refused so far, kept in the queue's refused table "
                  "and offered again at the next start%s", self.channel, len(flight.ids), flight.topic, why, self.refused, hint)

    def _messages(self, rows: list[Pending]) -> list[tuple[str, str, list[int]]]:
        """Rows -> wire messages: single rows as they are, runs of frames as batches."""
        out: list[tuple[str, str, list[int]]] = []
        run: list[Pending] = []

        def flush() -> None:
            if len(run) == 1:
                out.append((run[0].topic, run[0].payload, [run[0].id]))
            elif run:
                try:
                    frames = [LevelFrame.model_validate_json(r.payload) for r in run]
                    batch = LevelBatch(sensor_id=frames[0].sensor_id, frames=frames)
                except ValidationError as exc:
                    # A row this version cannot read (written by another version, or
                    # damaged): each row leaves alone, so the ingestion service
                    # quarantines the bad one with its reason and the queue moves on.
                    log.warning("%d queued frames do not form a valid batch (%s); sending them one by one",
                                len(run), exc.errors()[0]["msg"])
                    out.extend((r.topic, r.payload, [r.id]) for r in run)
                else:
                    out.append((run[0].topic, batch.model_dump_json(by_alias=True), [r.id for r in run]))
            run.clear()

        for row in rows:
            if row.kind == "frame" and (not run or (row.topic == run[0].topic and len(run) < CATCHUP_BATCH_FRAMES)):
                run.append(row)
                continue
            flush()
            if row.kind == "frame":
                run.append(row)
            else:
                out.append((row.topic, row.payload, [row.id]))
        flush()
        return out

    def drain(self, timeout_s: float) -> bool:
        """Pump until this channel's queue is empty (True) or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pump()
            if self.outbox.count(self.channel) == 0:
                return True
            time.sleep(0.02)
        return False
