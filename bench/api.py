"""Benchmark of the open API on a week of 1 s data: aggregates vs the raw 1 s rows, side by side.

Loads ``--sensors`` x ``--days`` of 1 s rows into a private PostgreSQL (sonopolis.embedded)
with one ``INSERT ... SELECT FROM generate_series`` per day, builds the aggregates with
the ingestion's own refresh, then measures in the same run:

(a) one sensor's hourly levels over the whole period through the open API
    (``GET /v1/sensors/{id}/levels?period=1h``, in-process ASGI) vs the same hourly
    statistics computed from the raw 1 s rows;
(b) the NGSI-LD temporal query for one day of 1-minute values
    (``GET /ngsi-ld/v1/temporal/entities``, ``ngsi.context_source`` mounted in the app)
    vs the same 1-minute statistics computed from the raw rows.

``speedup_vs_raw`` is the smaller of the two p95 ratios (raw / served). Band arrays are
all-NULL in the generated rows (a sensor omitting its spectrum) to keep the week on
disk small; no measured query reads them.

Last line: ``api: hourly_p95_ms=<x> temporal_p95_ms=<y> speedup_vs_raw=<z>``.
Full run: ``python bench/api.py`` (40 x 7 days = 24.2 M rows); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RAW_HOURLY = """
SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01') AS bucket,
       10 * log(avg(power(10::float8, laeq / 10.0))) AS laeq, max(lafmax) AS lamax, min(lafmin) AS lamin,
       percentile_cont(ARRAY[0.9, 0.5, 0.1]) WITHIN GROUP (ORDER BY laeq) AS la10_50_90,
       sum(period_s) / 3600.0 AS coverage, count(*) AS n_seconds, sum(car_horn) AS car_horn, sum(siren) AS siren
FROM smart.levels WHERE sensor_id = %s AND time >= %s AND time < %s GROUP BY 1 ORDER BY 1
"""
RAW_MINUTE = RAW_HOURLY.replace("'1 hour'", "'1 minute'").replace("3600.0", "60.0")


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]


def load(admin_dsn: str, n_sensors: int, days: int, start: dt.datetime) -> str:
    import psycopg

    from api.schema import migrate as migrate_api
    from ingestion import aggregates, partitions, registry
    from ingestion.schema import migrate as migrate_ingestion
    from sonopolis.bootstrap import bootstrap

    dsns = bootstrap(admin_dsn, "sonobench")
    with psycopg.connect(dsns.smart, autocommit=True) as conn:
        migrate_ingestion(conn, timescale="off")
        migrate_api(conn)
        conn.autocommit = False
        registry.upsert(conn, [registry.Sensor(sensor_id=f"bench-{i:02d}", name=f"Bench {i}", latitude=45.43 + i * 1e-3,
                                               longitude=4.38 + i * 1e-3) for i in range(n_sensors)])
        partitions.ensure(conn, [(start + dt.timedelta(days=d)).date() for d in range(days)])
        conn.commit()
        for d in range(days):
            t0 = time.perf_counter()
            day = start + dt.timedelta(days=d)
            conn.execute(
                "INSERT INTO smart.levels (sensor_id, time, period_s, laeq, lafmax, lafmin, lcpeak, bands, status, car_horn, siren)"
                " SELECT 'bench-' || lpad(s::text, 2, '0'), t, 1, l, l + 3, l - 4, l + 15, array_fill(NULL::real, ARRAY[30]), 'ok',"
                "        (random() < 0.001)::int, (random() < 0.0002)::int"
                " FROM generate_series(0, %s - 1) s, generate_series(%s::timestamptz, %s::timestamptz - interval '1 second', interval '1 second') t,"
                "      LATERAL (SELECT (55 + 8 * sin(extract(epoch FROM t) / 13751.0 + s) + 6 * random())::real AS l) x",
                (n_sensors, day, day + dt.timedelta(days=1)))
            conn.commit()
            t1 = time.perf_counter()
            aggregates.refresh(conn, day, day + dt.timedelta(days=1))
            conn.commit()
            print(f"day {d + 1}/{days}: {n_sensors * 86400:,} rows loaded in {t1 - t0:.1f} s, aggregates in {time.perf_counter() - t1:.1f} s", flush=True)
        conn.execute("ANALYZE")
        conn.commit()
    return dsns.smart


async def measure(dsn: str, start: dt.datetime, days: int, reps: int, raw_reps: int) -> tuple[float, float, float, float]:
    import httpx
    from psycopg_pool import AsyncConnectionPool

    from api.app import create_app
    from api.settings import ApiSettings, OpenEventSettings

    settings = ApiSettings(rate_limit_per_minute=1_000_000, rate_limit_burst=100_000, events=OpenEventSettings(run_in_api=False))
    end = start + dt.timedelta(days=days)
    day = start + dt.timedelta(days=days - 1)
    z = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    async with AsyncConnectionPool(dsn, min_size=2, max_size=4, kwargs={"autocommit": True}, open=False) as pool:
        app = create_app(settings, pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:

            async def api_hourly(i: int) -> None:
                r = await client.get(f"/v1/sensors/bench-{i % 40:02d}/levels", params={"period": "1h", "from": z(start), "to": z(end), "limit": 1000})
                assert r.status_code == 200 and len(r.json()["items"]) == 24 * days, r.text[:300]

            async def api_temporal(i: int) -> None:
                r = await client.get("/ngsi-ld/v1/temporal/entities", params={
                    "type": "NoiseLevelObserved", "id": f"urn:ngsi-ld:NoiseLevelObserved:bench-{i % 40:02d}:PT1M",
                    "timerel": "between", "timeAt": z(day), "endTimeAt": z(day + dt.timedelta(days=1)), "lastN": 1440})
                assert r.status_code == 200 and len(r.json()[0]["LAeq"]) == 1440, r.text[:300]

            async def raw(query: str, i: int, a: dt.datetime, b: dt.datetime, expect: int) -> None:
                async with pool.connection() as conn:
                    cur = await conn.execute(query, (f"bench-{i % 40:02d}", a, b))
                    assert len(await cur.fetchall()) == expect

            async def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
                await fn(0)  # warm-up
                out = []
                for i in range(1, n + 1):
                    t0 = time.perf_counter()
                    await fn(i)
                    out.append((time.perf_counter() - t0) * 1000)
                return out

            n_sensors = 40
            async with pool.connection() as conn:
                n_sensors = (await (await conn.execute("SELECT count(*) FROM smart.sensors")).fetchone())[0]
            wrap = lambda f: (lambda i: f(i % n_sensors))  # noqa: E731
            hourly = await timed(wrap(api_hourly), reps)
            temporal = await timed(wrap(api_temporal), reps)
            raw_hourly = await timed(wrap(lambda i: raw(RAW_HOURLY, i, start, end, 24 * days)), raw_reps)
            raw_minute = await timed(wrap(lambda i: raw(RAW_MINUTE, i, day, day + dt.timedelta(days=1), 1440)), raw_reps)
    print(f"(a) hourly levels, {days} d: API p95 {p95(hourly):.1f} ms vs raw 1 s rows p95 {p95(raw_hourly):.1f} ms "
          f"(x{p95(raw_hourly) / p95(hourly):.1f})")
    print(f"(b) NGSI-LD temporal, 1 d of 1 min: p95 {p95(temporal):.1f} ms vs raw 1 s rows p95 {p95(raw_minute):.1f} ms "
          f"(x{p95(raw_minute) / p95(temporal):.1f})")
    return p95(hourly), p95(temporal), p95(raw_hourly), p95(raw_minute)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 sensors x 2 days (smoke run)")
    parser.add_argument("--sensors", type=int, default=40)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--reps", type=int, default=60, help="Requests per served measurement")
    parser.add_argument("--raw-reps", type=int, default=8, help="Repetitions of each raw-row query")
    parser.add_argument("--work-dir", type=Path, default=None, help="Where the private PostgreSQL cluster lives")
    args = parser.parse_args()
    if args.quick:
        args.sensors, args.days, args.reps, args.raw_reps = 8, 2, 30, 5

    from sonopolis.embedded import LocalPostgres

    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=args.days + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="sonobench-api-", dir=args.work_dir) as tmp:
        pg = LocalPostgres(Path(tmp) / "pg").start()
        try:
            t0 = time.perf_counter()
            dsn = load(pg.admin_dsn, args.sensors, args.days, start)
            print(f"loaded {args.sensors} sensors x {args.days} d = {args.sensors * args.days * 86400:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
            hourly, temporal, raw_h, raw_m = asyncio.run(measure(dsn, start, args.days, args.reps, args.raw_reps))
        finally:
            pg.destroy()
    speedup = min(raw_h / hourly, raw_m / temporal)
    print(f"api: hourly_p95_ms={hourly:.1f} temporal_p95_ms={temporal:.1f} speedup_vs_raw={speedup:.1f}")


if __name__ == "__main__":
    main()
