"""The edge link never has more messages in flight than the broker accepts (Receive Maximum).

Against a real mosquitto with ``max_inflight_messages 2``: mosquitto 2.0 answers a QoS 2
message beyond that quota with a PUBREC (reason 0x97, which paho ignores), drops it, and
completes the flow, so the outbox deleted 186 of 200 queued events as delivered while
only 14 reached a subscriber. QoS 1 is not counted by mosquitto, but a v5 broker may
disconnect a client that exceeds its Receive Maximum (0x93), so it is held to it as well.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common.config import MqttSettings
from detectors.outbox import Outbox
from detectors.publisher import MAX_IN_FLIGHT, BrokerLink
from sonopolis.embedded import LocalMosquitto
from tests import services
from tests.detectors.test_agent import Collector
from tests.polling import wait_until

RECEIVE_MAXIMUM = 2
EVENTS = 200
TOPIC = "sonopolis-safe/v1/events/sensor-01"


@pytest.fixture
def tight_broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A broker that accepts two unacknowledged messages per client (the CONNACK says so)."""
    with services.private_mosquitto(tmp_path, max_inflight_messages=RECEIVE_MAXIMUM) as broker:
        yield broker


def _backlog(tmp: Path) -> Outbox:
    """Security events queued during an outage: each leaves as its own message."""
    outbox = Outbox(tmp / "queue", max_messages=10_000)
    for i in range(EVENTS):
        outbox.put("safe", "event", TOPIC, json.dumps({"i": i}))
    return outbox


@contextmanager
def _link(outbox: Outbox, port: int, qos: int) -> Iterator[BrokerLink]:
    link = BrokerLink("safe", MqttSettings(port=port, client_id=f"edge-{uuid.uuid4().hex[:6]}", qos=qos), outbox)
    link.start()
    try:
        wait_until(lambda: link.connected, timeout=10, what="link connected")
        yield link
    finally:
        link.stop()


def _received(rx: Collector) -> list[int]:
    return [json.loads(payload)["i"] for _, payload in rx.messages]


@pytest.mark.parametrize("qos", [1, 2])
def test_a_backlog_drains_whole_through_a_broker_with_a_small_receive_maximum(
    tmp_path: Path, tight_broker: LocalMosquitto, qos: int
) -> None:
    outbox = _backlog(tmp_path)
    rx = Collector(tight_broker.port)
    try:
        with _link(outbox, tight_broker.port, qos) as link:
            assert link.drain(30), f"{outbox.count('safe')} events still queued"
        # Every row deleted from the outbox must have reached the subscriber.
        wait_until(lambda: len(set(_received(rx))) >= EVENTS, timeout=10, what="all events at the subscriber")
    except AssertionError:
        got = set(_received(rx))
        raise AssertionError(f"qos {qos}: {len(got)} of {EVENTS} events arrived, {EVENTS - len(got)} lost") from None
    finally:
        rx.close()
    assert set(_received(rx)) == set(range(EVENTS))


def test_the_window_follows_the_connacks_receive_maximum(tmp_path: Path, tight_broker: LocalMosquitto) -> None:
    """Both gates: the pump's (messages it hands paho) and paho's own (its resends after a reconnect)."""
    with _link(Outbox(tmp_path, 10), tight_broker.port, 2) as link:
        assert link._window == RECEIVE_MAXIMUM
        assert link._client.max_inflight_messages == RECEIVE_MAXIMUM


def test_a_broker_restart_mid_backlog_loses_nothing_at_qos_2(tmp_path: Path, tight_broker: LocalMosquitto) -> None:
    """Each reconnection reads the window again from its CONNACK, and paho's resends of
    the old connection's messages plus the pump's new ones lose no row."""
    outbox = _backlog(tmp_path)
    rx = Collector(tight_broker.port)
    try:
        with _link(outbox, tight_broker.port, 2) as link:
            for _ in range(3):
                wait_until(lambda: (link.pump(), link.sent)[1] >= 20, timeout=10, what="part of the backlog sent")
                link.sent = 0
                tight_broker.restart()
                wait_until(lambda: link.connected, timeout=15, what="link reconnected")
            assert link.drain(30), f"{outbox.count('safe')} events still queued"
        wait_until(lambda: set(_received(rx)) >= set(range(EVENTS)), timeout=15, what="all events at the subscriber")
    finally:
        rx.close()
    assert set(_received(rx)) == set(range(EVENTS))


def test_a_broker_allowing_more_leaves_our_own_cap(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    """The usual broker (limit 1000 here, 100 in deploy/) leaves the window at our 50."""
    outbox = _backlog(tmp_path)
    with _link(outbox, mqtt_broker.port, 1) as link:
        assert link.drain(30)
        assert link._window == MAX_IN_FLIGHT
        assert link._client.max_inflight_messages == MAX_IN_FLIGHT


def test_a_connack_without_receive_maximum_allows_our_cap_and_zero_never_stalls() -> None:
    """No property means 65 535 (MQTT 5.0, 3.2.2.3.3); 0 is a broker's protocol error, read as 1."""
    from detectors.publisher import in_flight_window  # here: the broker tests above must run even without it

    class Props:
        pass

    assert in_flight_window(50, Props()) == 50
    zero = Props()
    zero.ReceiveMaximum = 0  # type: ignore[attr-defined]
    assert in_flight_window(50, zero) == 1


class _SilentBroker:
    """A v5 broker that announces Receive Maximum 2, never acknowledges, and counts PUBLISHes per connection.

    A stand-in rather than mosquitto: the case needs a broker that never answers, and a
    connection dropped at a chosen moment, which mosquitto cannot be made to do.
    """

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.publishes: list[int] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.publishes.append(0)
            threading.Thread(target=self._serve, args=(conn, len(self.publishes) - 1), daemon=True).start()

    @staticmethod
    def _packet(conn: socket.socket) -> int | None:
        first = conn.recv(1)
        if not first:
            return None
        length, mult = 0, 1
        while True:
            digit = conn.recv(1)[0]
            length, mult = length + (digit & 127) * mult, mult * 128
            if not digit & 128:
                break
        while length:
            chunk = conn.recv(length)
            if not chunk:
                return None
            length -= len(chunk)
        return first[0] >> 4

    def _serve(self, conn: socket.socket, i: int) -> None:
        try:
            while (kind := self._packet(conn)) is not None:
                if kind == 1:  # CONNECT -> CONNACK with the property Receive Maximum (0x21) = 2
                    conn.sendall(bytes([0x20, 6, 0, 0, 3, 0x21, 0, RECEIVE_MAXIMUM]))
                elif kind == 3:  # PUBLISH, never acknowledged
                    self.publishes[i] += 1
                elif kind == 12:  # PINGREQ
                    conn.sendall(bytes([0xD0, 0]))
        except OSError:
            pass

    def drop(self) -> None:
        self.conns[-1].shutdown(socket.SHUT_RDWR)
        self.conns[-1].close()

    def close(self) -> None:
        self.server.close()


def test_reconnects_never_stack_old_messages_above_the_receive_maximum(tmp_path: Path) -> None:
    """paho resent at every CONNACK all it still held, uncounted, on top of the pump's resends:
    2, 2, 4, 6 PUBLISHes on four connections, and its store grew by a window per flap."""
    broker = _SilentBroker()
    link = BrokerLink("safe", MqttSettings(port=broker.port, client_id=f"edge-{uuid.uuid4().hex[:6]}", qos=1), _backlog(tmp_path))
    link._client.reconnect_delay_set(0.1, 0.1)  # noqa: SLF001 - the test flaps the link quickly
    link.start()
    try:
        for n in range(4):
            wait_until(lambda: link.connected, timeout=10, what=f"connection {n}")
            wait_until(lambda: (link.pump(), broker.publishes[-1] >= RECEIVE_MAXIMUM)[1], timeout=10, what="a full window")
            for _ in range(5):  # the pump would send more if the window let it
                link.pump()
            wait_until(lambda: len(broker.publishes) == n + 1, timeout=5, what="the broker's count")
            assert broker.publishes[n] == RECEIVE_MAXIMUM, broker.publishes
            assert len(link._client._out_messages) <= RECEIVE_MAXIMUM  # noqa: SLF001
            broker.drop()
            wait_until(lambda: not link.connected, timeout=10, what="the drop seen")
            if n % 2:  # half the time the pump notices the drop, half the time it does not
                link.pump()
        wait_until(lambda: link.connected, timeout=10, what="the last connection")
        wait_until(lambda: (link.pump(), len(broker.publishes) == 5 and broker.publishes[4] >= RECEIVE_MAXIMUM)[1],
                   timeout=10, what="the last window")
        assert broker.publishes == [RECEIVE_MAXIMUM] * 5
    finally:
        link.stop()
        broker.close()
