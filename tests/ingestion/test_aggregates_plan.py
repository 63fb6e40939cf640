"""The refresh's plans read the 1 s rows by index range of (sensor, time), never a sensor's whole day.

bench/api.py found a refresh of one day of 40 sensors taking 662 s instead of ~40 s once
the day's partition had statistics: the planner joined the touched minutes to the 1 s
rows on sensor_id alone (merge or hash join) and rescanned the sensor's day for each
minute. ``aggregates.pin_join_shape`` fixes the join shape; this test EXPLAINs every
refresh statement over an analysed partition and checks plan shapes, never timings.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from psycopg import sql

from ingestion import aggregates, partitions
from tests.ingestion.factories import T0, ready_db


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan] + [n for child in plan.get("Plans", []) for n in _nodes(child)]


def test_every_refresh_statement_reads_touched_ranges_by_index(db) -> None:
    with ready_db(db.smart, ["s1", "s2", "s3"]) as conn:
        partitions.ensure(conn, [T0.date()])
        # three sensors x 3 h of 1 s rows, analysed: the statistics that flipped the plan
        conn.execute(
            "INSERT INTO smart.levels (sensor_id, time, period_s, laeq, lafmax, lafmin, lcpeak, bands, status, car_horn, siren)"
            " SELECT s, %s + k * interval '1 second', 1, 55, 58, 51, 70, array_fill(40::real, ARRAY[30]), 'ok', 0, 0"
            " FROM unnest(ARRAY['s1', 's2', 's3']) s, generate_series(0, 3 * 3600 - 1) k", (T0,))
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("smart", partitions.partition_name(T0.date()))))
        conn.commit()
        with conn.transaction():
            aggregates._prepare_touched(conn)
            conn.execute("INSERT INTO pg_temp.sonopolis_touched_minutes VALUES ('s1', %s), ('s2', %s), ('s3', %s)",
                         (T0 + timedelta(minutes=5), T0 + timedelta(minutes=65), T0 + timedelta(minutes=125)))
            conn.execute("ANALYZE pg_temp.sonopolis_touched_minutes")
            aggregates.pin_join_shape(conn)
            checked = 0
            for table, _action, stmt in aggregates._statements("smart"):
                (plan_json,) = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + stmt, {"default_tz": "Europe/Paris"}).fetchone()
                plan = (plan_json if isinstance(plan_json, list) else json.loads(plan_json))[0]["Plan"]
                nodes = _nodes(plan)
                joins = {n["Node Type"] for n in nodes if "Join" in n["Node Type"] or n["Node Type"] == "Nested Loop"}
                assert not joins & {"Hash Join", "Merge Join"}, (table, joins)
                raw_scans = [n for n in nodes if n.get("Relation Name") == partitions.partition_name(T0.date())]
                for scan in raw_scans:
                    assert scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), (table, scan["Node Type"])
                    cond = scan.get("Index Cond") or next((n.get("Index Cond", "") for n in _nodes(scan)), "")
                    if scan["Node Type"] == "Bitmap Heap Scan":
                        cond = " ".join(n.get("Index Cond", "") for n in _nodes(scan))
                    assert "sensor_id" in cond and "time" in cond, (table, cond)
                checked += bool(raw_scans)
            assert checked >= 4  # 1 min, 15 min, 1 h and 1 d read the 1 s rows (Lden reads levels_1h)
