"""The pipeline's slow path: a message the database refuses is quarantined, the others are stored."""

from __future__ import annotations

import json
import queue
import time
from datetime import timedelta

from ingestion import partitions
from ingestion.consumer import Inbound
from ingestion.metrics import IngestMetrics
from ingestion.pipeline import Pipeline
from ingestion.settings import IngestSettings
from smart.db import SmartDbSettings
from tests.ingestion.factories import T0, frame_dict, payload, ready_db


def _flush(dsn: str, bodies: list[bytes]) -> int:
    """One batch of ``bodies`` through the pipeline as the service runs it; return how many were acked."""
    inbox: "queue.Queue[Inbound]" = queue.Queue()
    for mid, body in enumerate(bodies, start=1):
        inbox.put(Inbound(1, mid, 1, "sonopolis/v1/levels/s1", body, time.time()))
    acked: list[Inbound] = []
    pipeline = Pipeline(SmartDbSettings(dsn=dsn), IngestSettings(), inbox, IngestMetrics(),
                        lambda items: acked.extend(items) or len(items), timescale=False)
    pipeline._flush(pipeline._collect(wait=False))
    pipeline._close()
    return len(acked)


def test_a_refused_message_does_not_take_the_new_days_partition_with_it(db):
    """The batch's first try creates the partition of a new UTC day, then fails on the one
    message the database refuses and rolls back, partition included. The writer still
    counted that day as existing, so on the slow path the valid message of that day failed
    too ("no partition of relation"): all 3 messages quarantined as db_rejected, the 2
    valid seconds lost from ``levels``."""
    conn = ready_db(db.smart, ["s1"])
    new_day = T0 - timedelta(days=40)
    assert new_day.date() not in partitions.existing_days(conn)
    # A rule the database enforces and validation does not know (any such refusal takes this path).
    conn.execute("ALTER TABLE smart.levels ADD CONSTRAINT laeq_below_77 CHECK (laeq < 77)")
    conn.commit()
    bodies = [payload(frame_dict("s1", new_day, 60.0)), payload(frame_dict("s1", new_day + timedelta(seconds=1), 77.7)),
              payload(frame_dict("s1", new_day + timedelta(seconds=2), 61.0))]
    assert _flush(db.smart, bodies) == 3
    stored = [r[0] for r in conn.execute("SELECT laeq FROM smart.levels WHERE sensor_id = 's1' ORDER BY time").fetchall()]
    quarantined = conn.execute("SELECT reason_code, reason FROM smart.quarantine").fetchall()
    assert stored == [60.0, 61.0], quarantined
    assert len(quarantined) == 1 and quarantined[0][0] == "db_rejected" and "laeq_below_77" in quarantined[0][1]
    conn.close()


def test_a_refused_message_does_not_take_the_staging_table_with_it(db):
    """A redelivered replay (already stored) sends the batch through the staging table, created
    in the transaction that the refused message then rolls back. The writer still counted the
    table as created, so on the slow path the redelivered replay failed (here with 'schema
    "pg_temp" does not exist': the session's temporary schema went with the rollback too)
    and was quarantined as db_rejected instead of being counted as the harmless duplicate
    it is."""
    conn = ready_db(db.smart, ["s1"])
    # A replayed batch: COPY meets its duplicates (flushed every few hundred rows) before the refused row.
    replay = json.dumps({"schema": "sonopolis.level-batch/1", "sensor_id": "s1",
                         "frames": [frame_dict("s1", T0 + timedelta(seconds=i), 60.0) for i in range(1000)]}).encode()
    assert _flush(db.smart, [replay]) == 1
    conn.execute("ALTER TABLE smart.levels ADD CONSTRAINT laeq_below_77 CHECK (laeq < 77)")
    conn.commit()
    assert _flush(db.smart, [replay, payload(frame_dict("s1", T0 + timedelta(seconds=1000), 77.7))]) == 2
    assert conn.execute("SELECT count(*) FROM smart.levels").fetchone() == (1000,)
    quarantined = conn.execute("SELECT reason FROM smart.quarantine").fetchall()
    assert len(quarantined) == 1 and "laeq_below_77" in quarantined[0][0], quarantined
    conn.close()
