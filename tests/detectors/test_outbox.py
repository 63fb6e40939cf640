"""The edge agent's on-disk message queue: bounded per channel, cheap to drain."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common.config import MqttSettings
from detectors.meter import SoundLevelMeter
from detectors.outbox import Outbox, OutboxError
from detectors.publisher import MAX_ROWS_PER_PUMP, BrokerLink
from sonopolis.embedded import LocalMosquitto
from tests.detectors.test_agent import Collector
from tests.polling import wait_until


def _frame_json(sensor: str = "sensor-01") -> tuple[str, str]:
    meter = SoundLevelMeter(16000, 100.0, datetime(2026, 1, 1, tzinfo=timezone.utc))
    (period,) = meter.feed(0.05 * np.random.default_rng(0).standard_normal(16000))
    frame = period.to_frame(sensor)
    return frame.topic(), frame.model_dump_json(by_alias=True)


@contextmanager
def _linked(outbox: Outbox, port: int) -> Iterator[tuple[BrokerLink, Collector]]:
    """A connected smart link on ``outbox`` and a subscriber on the same broker."""
    rx = Collector(port)
    link = BrokerLink("smart", MqttSettings(port=port, client_id=f"edge-{uuid.uuid4().hex[:6]}"), outbox)
    link.start()
    try:
        wait_until(lambda: link.connected, timeout=10, what="link connected")
        yield link, rx
    finally:
        link.stop()
        rx.close()


def test_a_full_smart_backlog_never_pushes_out_a_security_event(tmp_path: Path) -> None:
    """One bound for both channels once made every new event evict itself during a smart outage."""
    outbox = Outbox(tmp_path, max_messages=100)
    for i in range(150):
        outbox.put("smart", "frame", "sonopolis/v1/levels/s", json.dumps({"i": i}))
    event_id = outbox.put("safe", "event", "sonopolis/v1/security/s", '{"label": "gunshot"}')
    assert [row.id for row in outbox.pending("safe", 10)] == [event_id]
    assert (outbox.count("smart"), outbox.count("safe"), outbox.count()) == (100, 1, 101)
    assert outbox.dropped == 50  # rows actually deleted, oldest first
    assert [json.loads(r.payload)["i"] for r in outbox.pending("smart", 3)] == [50, 51, 52]


def test_the_safe_channel_has_its_own_bound(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_messages=100)
    for i in range(101):
        outbox.put("safe", "event", "sonopolis/v1/security/s", json.dumps({"i": i}))
    outbox.put("smart", "frame", "sonopolis/v1/levels/s", "{}")
    assert (outbox.count("safe"), outbox.count("smart"), outbox.dropped) == (100, 1, 1)


def test_counts_come_back_from_the_file_after_a_restart(tmp_path: Path) -> None:
    first = Outbox(tmp_path, max_messages=100)
    for i in range(7):
        first.put("smart", "frame", "t", json.dumps({"i": i}))
    first.put("safe", "event", "t", "{}")
    first.close()
    again = Outbox(tmp_path, max_messages=100)
    assert (again.count("smart"), again.count("safe")) == (7, 1)


def test_an_ack_is_one_transaction_and_touches_only_its_channel(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_messages=100_000)
    smart = [outbox.put("smart", "frame", "t", "{}") for _ in range(5000)]
    safe = outbox.put("safe", "event", "t", "{}")
    statements: list[str] = []
    outbox._db.set_trace_callback(statements.append)
    outbox.ack("smart", [*smart, safe])  # a safe id in a smart ack is not the smart link's to delete
    outbox._db.set_trace_callback(None)
    assert sum(s.startswith("COMMIT") for s in statements) == 1
    assert (outbox.count("smart"), outbox.count("safe")) == (0, 1)
    with sqlite3.connect(outbox.path) as check:
        assert check.execute("SELECT count(*) FROM outbox").fetchone() == (1,)


def test_a_backlog_drains_a_bounded_number_of_rows_per_pump(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    """Each pump runs in the audio loop: it may not take on an 8-hour backlog at once."""
    topic, payload = _frame_json()
    outbox = Outbox(tmp_path / "queue", max_messages=100_000)
    for _ in range(3 * MAX_ROWS_PER_PUMP + 7):
        outbox.put("smart", "frame", topic, payload)
    with _linked(outbox, mqtt_broker.port) as (link, rx):
        sent = []
        while outbox.count("smart"):
            sent.append(link.pump())
            time.sleep(0.02)
        assert max(sent) <= MAX_ROWS_PER_PUMP
        assert sum(sent) >= 3 * MAX_ROWS_PER_PUMP + 7  # re-sends after a reconnect may add to it
        wait_until(lambda: len(rx.frames()) >= 3 * MAX_ROWS_PER_PUMP + 7, timeout=15, what="all frames received")
        assert len(rx.frames()) == 3 * MAX_ROWS_PER_PUMP + 7


def test_a_queued_frame_this_version_cannot_read_leaves_alone(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    """It must not wedge the queue: sent as it is, the ingestion service quarantines it with its reason."""
    topic, payload = _frame_json()
    outbox = Outbox(tmp_path / "queue", max_messages=1000)
    for _ in range(3):
        outbox.put("smart", "frame", topic, payload)
    outbox.put("smart", "frame", topic, '{"schema": "sonopolis.level-frame/0", "laeq": "loud"}')
    for _ in range(3):
        outbox.put("smart", "frame", topic, payload)
    with _linked(outbox, mqtt_broker.port) as (link, rx):
        assert link.drain(10.0)
        wait_until(lambda: len(rx.messages) >= 7, timeout=10, what="seven messages")
        bodies = [json.loads(body) for _, body in rx.messages]
        assert [b.get("laeq") for b in bodies].count("loud") == 1
        assert sum(b.get("schema") == "sonopolis.level-frame/1" for b in bodies) == 6


def test_refused_rows_are_set_aside_with_their_reason_and_come_back_in_their_place(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_messages=100)
    ids = [outbox.put("smart", "frame", "t", json.dumps({"i": i})) for i in range(5)]
    event = outbox.put("safe", "event", "t", "{}")
    assert outbox.refuse("smart", [ids[1], ids[2], event], "Not authorized (0x87)") == 2  # not the safe row: not smart's
    assert (outbox.count("smart"), outbox.refused_count("smart"), outbox.count("safe"), outbox.refused_count()) == (3, 2, 1, 2)
    assert [json.loads(r.payload)["i"] for r in outbox.pending("smart", 10)] == [0, 3, 4]
    outbox.close()

    again = Outbox(tmp_path, max_messages=100)  # the next start
    assert (again.count("smart"), again.refused_count("smart")) == (3, 2)
    with sqlite3.connect(again.path) as check:
        assert check.execute("SELECT reason FROM refused").fetchall() == [("Not authorized (0x87)",)] * 2
    assert again.requeue_refused() == 2
    assert [json.loads(r.payload)["i"] for r in again.pending("smart", 10)] == [0, 1, 2, 3, 4]
    assert (again.count("smart"), again.refused_count()) == (5, 0)
    assert again.put("smart", "frame", "t", "{}") > event  # ids are never reused


def test_the_refused_rows_have_the_queues_bound_per_channel(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, max_messages=100)
    ids = [outbox.put("smart", "frame", "t", json.dumps({"i": i})) for i in range(100)]
    outbox.refuse("smart", ids, "Not authorized (0x87)")
    more = [outbox.put("smart", "frame", "t", json.dumps({"i": 100 + i})) for i in range(30)]
    outbox.refuse("smart", more, "Not authorized (0x87)")
    assert (outbox.refused_count("smart"), outbox.dropped) == (100, 30)  # the oldest refused went first
    assert outbox.requeue_refused() == 100
    assert [json.loads(r.payload)["i"] for r in outbox.pending("smart", 1)] == [30]


def test_a_full_queue_warns_once_a_minute_not_at_every_message(tmp_path: Path, caplog, monkeypatch) -> None:
    """A sensor cut off for a day drops a frame a second once full: 86 400 warnings a day flooded the
    gateway's log (an SD card; journald's rate limit then hides every other line). Counted all the same."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    outbox = Outbox(tmp_path, max_messages=100)
    for i in range(100):
        outbox.put("smart", "frame", "t", json.dumps({"i": i}))
    with caplog.at_level("WARNING", logger="detectors.outbox"):
        for i in range(600):  # ten minutes of frames at one a second, the queue full
            outbox.put("smart", "frame", "t", json.dumps({"i": 100 + i}))
            now[0] += 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert outbox.dropped == 600 and outbox.count("smart") == 100
    assert len(warnings) == 10, warnings[:3]  # the first drop at once, then one a minute
    assert "dropped the 1 oldest message(s), 1 so far" in warnings[0]  # the operator learns it when it starts
    assert "dropped the 60 oldest message(s), 541 so far" in warnings[-1]  # every drop counted in the next line


def test_a_stop_inside_a_put_leaves_the_counts_true_to_the_file(tmp_path: Path, monkeypatch) -> None:
    """SIGTERM reaches the agent as KeyboardInterrupt at any bytecode, also between a put's count and its
    COMMIT: the row was rolled back but still counted, so the final drain waited for a message that did not
    exist (its whole timeout) and the final line said queued=1 of an empty queue."""
    outbox = Outbox(tmp_path, max_messages=100)
    outbox.put("smart", "frame", "t", "{}")

    def stopped(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(outbox, "_enforce_bound", stopped)  # runs after the count, before the COMMIT
    try:
        outbox.put("smart", "frame", "t", "{}")
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the stop did not reach the put")
    with sqlite3.connect(outbox.path) as check:
        rows = check.execute("SELECT count(*) FROM outbox").fetchone()[0]
    assert rows == 1  # rolled back
    assert (outbox.count("smart"), outbox.count()) == (rows, rows)


def _damage(path: Path) -> None:
    """Overwrite a stretch of pages, as a power cut during a write can leave an SD card's file."""
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 3 + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))


def test_a_damaged_queue_file_is_set_aside_and_the_agent_starts_with_a_new_one(tmp_path: Path, caplog) -> None:
    """A queue file damaged by a power cut made every start fail ("database disk image is malformed"):
    a restarting service measured nothing until someone deleted the file by hand. The messages are
    disposable, the sensor is not: the file is kept aside (one, in the queue directory) and a new one used."""
    first = Outbox(tmp_path, max_messages=1000)
    for i in range(300):
        first.put("smart", "frame", "t", json.dumps({"i": i, "pad": "x" * 700}))
    first.close()
    _damage(first.path)
    with caplog.at_level("ERROR", logger="detectors.outbox"):
        again = Outbox(tmp_path, max_messages=1000)
    assert again.count() == 0 and again.refused_count() == 0
    assert again.put("safe", "event", "t", "{}") > 0 and again.count("safe") == 1
    aside = tmp_path / "outbox.sqlite3.damaged"
    assert aside.is_file() and aside.stat().st_size > 4096 * 3
    assert any("damaged" in r.getMessage() and str(aside) in r.getMessage() for r in caplog.records)
    again.close()

    _damage(again.path)  # a second damaged file replaces the first: the directory stays bounded
    Outbox(tmp_path, max_messages=1000).close()
    assert sorted(p.name for p in tmp_path.iterdir() if "damaged" in p.name) == ["outbox.sqlite3.damaged"]


def test_a_queue_file_that_cannot_be_opened_is_still_an_error(tmp_path: Path) -> None:
    """Only a damaged file is set aside; a directory the agent may not write is the operator's to fix."""
    (tmp_path / "outbox.sqlite3").mkdir()  # not a file at all: no database can be opened there
    try:
        Outbox(tmp_path, max_messages=100)
    except OutboxError as exc:
        assert "cannot open message queue" in str(exc)
    else:
        raise AssertionError("a queue path that cannot be opened was accepted")
    assert (tmp_path / "outbox.sqlite3").is_dir()
