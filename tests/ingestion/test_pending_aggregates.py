"""Aggregates of committed rows are refreshed even when the ingest dies before its refresh.

The pipeline acks a batch right after its commit; the aggregates of its minutes are
refreshed later (every ``aggregate_refresh_s``, days and Lden every ``daily_refresh_s``).
Marks held only in memory were lost with the process, and the broker does not redeliver
acked messages, so those buckets stayed missing for good.
"""

from __future__ import annotations

import queue
import time
from datetime import date, timedelta

from ingestion.consumer import Inbound
from ingestion.maintenance import Maintainer
from ingestion.metrics import IngestMetrics
from ingestion.pipeline import Pipeline
from ingestion.settings import IngestSettings
from smart.db import SmartDbSettings
from tests.ingestion.factories import T0, frame_dict, payload, ready_db


def _commit_through_the_pipeline(dsn: str, maintainer: Maintainer, messages: list[bytes]) -> int:
    """Validate, commit and ack ``messages`` as the service does; return how many were acked."""
    inbox: "queue.Queue[Inbound]" = queue.Queue()
    for mid, body in enumerate(messages, start=1):
        inbox.put(Inbound(1, mid, 1, "sonopolis/v1/levels/s1", body, time.time()))
    acked: list[Inbound] = []

    def ack(items: list[Inbound]) -> int:
        acked.extend(items)
        return len(items)

    pipeline = Pipeline(SmartDbSettings(dsn=dsn), IngestSettings(), inbox, IngestMetrics(), ack,
                        timescale=False, on_committed=maintainer.touched)
    pipeline._flush(pipeline._collect(wait=False))
    pipeline._close()
    return len(acked)


def test_aggregates_of_acked_rows_survive_an_ingest_crash(db):
    conn = ready_db(db.smart, ["s1"])
    crashed = Maintainer(SmartDbSettings(dsn=db.smart), IngestSettings(), timescale=False)
    messages = [payload(frame_dict("s1", T0 + timedelta(seconds=i), 70.0)) for i in range(60)]
    assert _commit_through_the_pipeline(db.smart, crashed, messages) == 60, "acked: the broker will not send them again"
    assert crashed.pending() > 0  # killed here, before any refresh: its marks die with it

    restarted = Maintainer(SmartDbSettings(dsn=db.smart), IngestSettings(), timescale=False)
    restarted.stop_event.set()
    restarted.run()  # one pass of the loop, as at start and stop
    one_minute = conn.execute("SELECT laeq, n_seconds FROM smart.levels_1min WHERE sensor_id = 's1' AND bucket = %s", (T0,)).fetchone()
    assert one_minute is not None and abs(one_minute[0] - 70.0) < 1e-3 and one_minute[1] == 60
    assert conn.execute("SELECT n_seconds FROM smart.levels_1h WHERE sensor_id = 's1' AND bucket = %s", (T0,)).fetchone() == (60,)
    assert conn.execute("SELECT n_seconds FROM smart.levels_1d WHERE sensor_id = 's1'").fetchone() == (60,)
    lday = conn.execute("SELECT lday FROM smart.lden_daily WHERE sensor_id = 's1' AND day = %s", (date(2026, 11, 23),)).fetchone()
    assert lday is not None and abs(lday[0] - 70.0) < 1e-3
    conn.close()
