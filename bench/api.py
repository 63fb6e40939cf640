"""Benchmark of the open API on a week of 1 s data: served from the aggregates vs computed from the raw 1 s rows.

Loads ``--sensors`` x ``--days`` of 1 s rows into a private PostgreSQL (sonopolis.embedded,
cluster under ``--work-dir``, default the system temp dir) with one
``INSERT ... SELECT FROM generate_series`` per day. Each row carries a full 30-band
third-octave spectrum (25 Hz - 20 kHz, a road-traffic shape around that second's LAeq
with +-2 dB noise per band), like the sensors send. After each day the aggregates are
built with the ingestion's own refresh (``ingestion.aggregates.refresh``).

Both sides of each comparison run in the same process, through the same in-process
ASGI app (httpx), and answer with the same content rendered by the same code; only
where the per-bucket statistics come from differs:

(a) one sensor's hourly levels over the whole period, with the spectra
    (``GET /v1/sensors/{id}/levels?period=1h&bands=true``):
    served = the API route (sensor check, one read of ``smart.levels_1h``,
    ``api.render.page_response`` with ``LevelRow``/``LevelPage``);
    raw = a bench-only route that does the same sensor check, computes every hourly
    column of ``levels_1h`` (LAeq, LAmax, LAmin, LA10/50/90, the 30 band energetic
    means, coverage, n_seconds, horn/siren counts) from the sensor's raw 1 s rows with
    the ingestion's own SQL expressions (``ingestion.aggsql.scalar_columns``, the same
    the refresh uses), converts bands with ``api.queries.bands_dict`` and renders with
    the same ``page_response``.
(b) the NGSI-LD temporal query for one day of 1-minute values, all attributes incl.
    ``thirdOctaveBands`` (``GET /ngsi-ld/v1/temporal/entities?id=...:PT1M&lastN=1440``):
    served = the ``ngsi.context_source`` route (sensor rows, presence probe, then the
    day's stamp recomputed from ``smart.levels_1min`` and, as it matches, the day's
    instances pre-rendered by ``ngsi.temporal_days`` — made by ``temporal_entity`` when
    the day settled, as the API process does — embedded by orjson via the route's own
    ``_Negotiated.respond``); the load step renders the settled days first and prints
    how long that took and what it stores;
    raw = a bench-only route that reads the same sensor rows, computes the 1-minute rows
    (same columns, same all-NULL-spectrum rule) from the raw 1 s rows with the same
    ingestion expressions, and renders with the same ``temporal_entity`` and
    ``_Negotiated.respond``. It skips the presence probe (an empty raw result already
    means "no series"), which favours the raw side slightly.

Before timing, the served and raw answers for one sensor are compared field by field
(equal, or within 0.1 dB where a float sum in another order flips a 0.1 dB rounding).
The rate-limit dependency is on both sides. ``gc.freeze()`` runs once after the app
is created (as ``sonopolis api`` does), so the long-lived objects stop being rescanned
(``--no-gc-freeze`` to compare).
Served and raw requests are interleaved, so load from other processes hits both.

``speedup_vs_raw`` is the smaller of the two p95 ratios (raw / served).
Last line: ``api: hourly_p95_ms=<x> temporal_p95_ms=<y> speedup_vs_raw=<z>``.
Full run: ``python bench/api.py`` (40 x 7 days = 24.2 M rows, ~7 GB); ``--quick``: 8 x 2 days.
"""


import argparse
import asyncio
import datetime as dt
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Road-traffic third-octave shape (dB relative to LAeq), 25 Hz .. 20 kHz: the EN 1793-3
# normalised traffic spectrum (100 Hz - 5 kHz) extended at both ends.
TRAFFIC_SHAPE = (-34, -31, -28, -25, -23, -21, -20, -20, -18, -16, -15, -14, -13, -12, -11,
                 -9, -8, -9, -10, -11, -13, -15, -16, -18, -20, -22, -25, -28, -32, -37)
ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


def raw_bucket_sql(width: str) -> str:
    """Per-bucket rows of one sensor in ``[%s, %s)`` from the raw 1 s rows, exactly the
    refresh's statistics (``ingestion.aggsql.scalar_columns``), ordered by bucket, LIMIT %s."""
    from ingestion.aggsql import scalar_columns

    cols = ",\n  ".join(f"{expr} AS {name}" for name, expr in scalar_columns())
    return (
        f"SELECT l.sensor_id, date_bin(INTERVAL '{width}', l.time, {ORIGIN}) AS bucket,\n  {cols},\n"
        f"  least(1.0, sum(l.period_s) / extract(epoch FROM INTERVAL '{width}'))::real AS coverage\n"
        "FROM smart.levels l WHERE l.sensor_id = %s AND l.time >= %s AND l.time < %s\n"
        "GROUP BY l.sensor_id, 2 ORDER BY 2 LIMIT %s"
    )


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]


def load(admin_dsn: str, n_sensors: int, days: int, start: dt.datetime) -> str:
    import psycopg

    from api.schema import migrate as migrate_api
    from ingestion import aggregates, partitions, registry
    from ingestion.schema import migrate as migrate_ingestion
    from ngsi.schema import migrate as migrate_ngsi
    from sonopolis.bootstrap import bootstrap

    with psycopg.connect(admin_dsn, autocommit=True) as admin:  # load speed only: fewer checkpoints
        admin.execute("ALTER SYSTEM SET max_wal_size = '4GB'")
        admin.execute("ALTER SYSTEM SET checkpoint_timeout = '30min'")
        admin.execute("SELECT pg_reload_conf()")
    dsns = bootstrap(admin_dsn, "sonobench")
    bands = ", ".join(f"x.l + ({o}) + 4 * random() - 2" for o in TRAFFIC_SHAPE)
    with psycopg.connect(dsns.smart, autocommit=True) as conn:
        migrate_ingestion(conn, timescale="off")
        migrate_api(conn)
        migrate_ngsi(conn)
        conn.autocommit = False
        # load session only: with fresh statistics the refresh's 1-minute statement is planned as a
        # merge join on sensor_id alone (each touched minute rescans the sensor's whole day:
        # >10 min per day at 40 sensors); the nested loop along the primary key takes ~15 s
        # (or, on some days, a hash join on sensor_id alone: same rescans), so both are off here
        conn.execute("SET enable_mergejoin = off")
        conn.execute("SET enable_hashjoin = off")
        registry.upsert(conn, [registry.Sensor(sensor_id=f"bench-{i:02d}", name=f"Bench {i}", latitude=45.43 + i * 1e-3,
                                               longitude=4.38 + i * 1e-3) for i in range(n_sensors)])
        partitions.ensure(conn, [(start + dt.timedelta(days=d)).date() for d in range(days)])
        conn.commit()
        for d in range(days):
            t0 = time.perf_counter()
            day = start + dt.timedelta(days=d)
            # one series k = sensor * 86400 + second: rows stored sensor by sensor within a day
            conn.execute(
                "INSERT INTO smart.levels (sensor_id, time, period_s, laeq, lafmax, lafmin, lcpeak, bands, status, car_horn, siren)"
                " SELECT 'bench-' || lpad((k / 86400)::text, 2, '0'), t, 1, x.l, x.l + 3, x.l - 4, x.l + 15,"
                f"        ARRAY[{bands}]::real[], 'ok', (random() < 0.001)::int, (random() < 0.0002)::int"
                " FROM generate_series(0, %s * 86400 - 1) k,"
                "      LATERAL (SELECT %s::timestamptz + (k %% 86400) * interval '1 second' AS t) tt,"
                "      LATERAL (SELECT (55 + 8 * sin(extract(epoch FROM tt.t) / 13751.0 + k / 86400) + 6 * random())::real AS l) x",
                (n_sensors, day))
            # what autovacuum does after a bulk day (it flipped the refresh plan on day 6 of a run, see above)
            part = conn.execute("SELECT tableoid::regclass::text FROM smart.levels WHERE time = %s LIMIT 1", (day,)).fetchone()
            conn.execute(f"ANALYZE {part[0]}")  # a name PostgreSQL itself quoted (regclass::text)
            conn.commit()
            t1 = time.perf_counter()
            aggregates.refresh(conn, day, day + dt.timedelta(days=1))
            conn.commit()
            print(f"day {d + 1}/{days}: {n_sensors * 86400:,} rows loaded + analysed in {t1 - t0:.1f} s, aggregates in {time.perf_counter() - t1:.1f} s", flush=True)
        conn.commit()
        # a week-old database has long been vacuumed; right after a bulk load, autovacuum
        # would otherwise spend the measurement visiting 24 M fresh rows on the same 2 cores
        t0 = time.perf_counter()
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE)")
        print(f"vacuumed and analysed in {time.perf_counter() - t0:.0f} s", flush=True)
    render_days(dsns.smart, days)
    with psycopg.connect(dsns.smart) as conn:
        size = conn.execute("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                            " WHERE n.nspname = 'smart' AND c.relkind IN ('r', 'm')").fetchone()
        print(f"smart schema on disk: {size[0] if size else '?'}", flush=True)
    return dsns.smart


def render_days(dsn: str, days: int) -> None:
    """What the API process's rendering loop (``ngsi.temporal_days``) did as each loaded day settled."""
    import psycopg

    from ngsi.settings import NgsiSettings
    from ngsi.temporal_days import render_settled

    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            settings = NgsiSettings(day_documents_lookback_days=days + 1)
            return await render_settled(conn, "smart", settings, dt.datetime.now(dt.UTC))

    t0 = time.perf_counter()
    n = asyncio.run(run())
    with psycopg.connect(dsn) as conn:
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('smart.ngsi_temporal_days'))").fetchone()
    print(f"pre-rendered {n} settled sensor-days of 1-minute instances in {time.perf_counter() - t0:.1f} s ({size[0] if size else '?'})", flush=True)


def raw_router(app: Any) -> None:
    """Bench-only routes answering (a) and (b) from the raw 1 s rows, rendered like the served routes."""
    from fastapi import APIRouter, Depends, Request
    from fastapi.responses import Response
    from psycopg.rows import dict_row

    from api.errors import NotFound
    from api.models import LevelPage, LevelRow, Period
    from api.queries import bands_dict
    from api.render import choose_format, page_response
    from api.security import rate_limit_factory
    from ngsi.context_source import CONTEXT_PATH, _Negotiated
    from ngsi.mapping import PERIODS
    from psycopg import sql

    from ngsi.temporal import sensor_rows_sql, series_columns, temporal_entity

    hourly_sql = raw_bucket_sql("1 hour")
    minute_sql = (
        "SELECT sensor_id, bucket, laeq, lamax, lamin, la10, la50, la90,"  # same columns as ngsi.selection(instances_only)
        " CASE WHEN array_remove(bands, NULL) = '{}' THEN NULL ELSE bands END AS bands, coverage, car_horn, siren"
        f" FROM ({raw_bucket_sql('1 minute').replace('ORDER BY 2', 'ORDER BY 2 DESC')}) r ORDER BY bucket"
    )
    rate_limit = rate_limit_factory(app.state.rate_buckets)
    router = APIRouter(prefix="/bench/raw", dependencies=[Depends(rate_limit)])

    @router.get("/v1/sensors/{sensor_id}/levels")
    async def raw_levels(request: Request, sensor_id: str, start: dt.datetime, end: dt.datetime, limit: int = 1000) -> Response:
        fmt = choose_format(request, None)
        pool = request.app.state.pool
        async with pool.connection() as conn:
            if not await request.app.state.queries.sensor_exists(conn, sensor_id):
                raise NotFound(f"no sensor {sensor_id!r}")
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(hourly_sql, (sensor_id, start, end, limit + 1))
            rows = await cur.fetchall()
        for r in rows:
            r["period"] = Period.h1
            r["bands"] = bands_dict(r["bands"])
        return page_response(request, fmt, LevelRow, LevelPage, rows, limit, "bucket", "levels_1h")

    @router.get("/ngsi-ld/v1/temporal/entities")
    async def raw_temporal(request: Request, sensor_id: str, start: dt.datetime, end: dt.datetime, last_n: int) -> Response:
        neg = _Negotiated(request, str(request.base_url).rstrip("/") + CONTEXT_PATH)
        async with request.app.state.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sensor_rows_sql(sql.Identifier("smart")))
            sensor_by_id = {r["sensor_id"]: r for r in await cur.fetchall()}
            async with conn.cursor(binary=True) as tuples:  # as the served route reads its instances
                await tuples.execute(minute_sql, (sensor_id, start, end, last_n))
                columns = series_columns([d.name for d in tuples.description or ()], await tuples.fetchall())
        body = [temporal_entity(sensor_by_id[sensor_id], PERIODS["1min"], columns[sensor_id], None, False)] if columns else []
        return neg.respond(body)

    app.include_router(router)


def same_content(a: Any, b: Any, path: str = "") -> list[str]:
    """Differences between two JSON values; floats may differ by one 0.1 dB rounding step."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in same_content(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in same_content(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float | int) and not isinstance(b, bool):
        return [] if abs(a - b) <= 0.1 + 1e-9 else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


async def measure(dsn: str, start: dt.datetime, days: int, reps: int, raw_reps: int, freeze: bool) -> dict[str, list[float]]:
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
        raw_router(app)
        if freeze:  # as `sonopolis api` does after start-up
            gc.collect()
            gc.freeze()
        async with pool.connection() as conn:
            n_sensors = (await (await conn.execute("SELECT count(*) FROM smart.sensors")).fetchone())[0]
            vacuuming = (await (await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")).fetchone())[0]
            print(f"autovacuum workers busy as the measurement starts: {vacuuming}", flush=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            sid = lambda i: f"bench-{i % n_sensors:02d}"  # noqa: E731
            window = {"start": z(start), "end": z(end)}
            one_day = {"start": z(day), "end": z(day + dt.timedelta(days=1))}
            requests = {
                "hourly": lambda i: (f"/v1/sensors/{sid(i)}/levels", {"period": "1h", "from": z(start), "to": z(end), "limit": 1000, "bands": "true"}),
                "raw_hourly": lambda i: (f"/bench/raw/v1/sensors/{sid(i)}/levels", {**window, "limit": 1000}),
                "temporal": lambda i: ("/ngsi-ld/v1/temporal/entities", {
                    "type": "NoiseLevelObserved", "id": f"urn:ngsi-ld:NoiseLevelObserved:{sid(i)}:PT1M",
                    "timerel": "between", "timeAt": z(day), "endTimeAt": z(day + dt.timedelta(days=1)), "lastN": 1440}),
                "raw_temporal": lambda i: ("/bench/raw/ngsi-ld/v1/temporal/entities", {"sensor_id": sid(i), **one_day, "last_n": 1440}),
            }

            async def get(name: str, i: int) -> httpx.Response:
                url, params = requests[name](i)
                r = await client.get(url, params=params)
                assert r.status_code == 200, (name, r.status_code, r.text[:300])
                return r

            sizes: dict[str, int] = {}
            for served, raw, what in (("hourly", "raw_hourly", "(a)"), ("temporal", "raw_temporal", "(b)")):
                a, b = await get(served, 0), await get(raw, 0)  # also the warm-up
                diffs = same_content(a.json(), b.json())
                assert not diffs, f"{what}: served and raw answers differ: {diffs[:5]}"
                exact = a.content == b.content
                sizes[served], sizes[raw] = len(a.content), len(b.content)
                print(f"{what} served and raw answers: same content ({'byte-identical' if exact else 'within 0.1 dB rounding'}), "
                      f"{len(a.content):,} bytes", flush=True)
            hourly_items = len((await get("hourly", 0)).json()["items"])
            assert hourly_items == 24 * days, hourly_items
            samples: dict[str, list[float]] = {k: [] for k in requests}
            every = max(1, reps // raw_reps)
            for i in range(1, reps + 1):  # interleaved: served each round, raw every `every` rounds
                names = ["hourly", "temporal"] + (["raw_hourly", "raw_temporal"] if (i - 1) % every == 0 and len(samples["raw_hourly"]) < raw_reps else [])
                for name in names:
                    t0 = time.perf_counter()
                    await get(name, i)
                    samples[name].append((time.perf_counter() - t0) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 sensors x 2 days (smoke run)")
    parser.add_argument("--sensors", type=int, default=40)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--reps", type=int, default=60, help="Requests per served measurement")
    parser.add_argument("--raw-reps", type=int, default=10, help="Requests per raw measurement")
    parser.add_argument("--work-dir", type=Path, default=None, help="Where the private PostgreSQL cluster lives (needs ~7 GB for the full run)")
    parser.add_argument("--no-gc-freeze", action="store_true", help="Skip gc.freeze() after start-up (to see what it changes)")
    args = parser.parse_args()
    if args.quick:
        args.sensors, args.days, args.reps, args.raw_reps = 8, 2, 40, 10

    from sonopolis.embedded import LocalPostgres

    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=args.days + 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    work = Path(args.work_dir or tempfile.gettempdir())
    need_gb = args.sensors * args.days * 86400 * 300 / 1e9 + 5  # rows + indexes + aggregates + WAL
    free_gb = shutil.disk_usage(work).free / 1e9
    if free_gb < need_gb:
        sys.exit(f"{work}: {free_gb:.0f} GB free, the run needs ~{need_gb:.0f} GB; pass --work-dir elsewhere")
    with tempfile.TemporaryDirectory(prefix="sonobench-api-", dir=work) as tmp:
        pg = LocalPostgres(Path(tmp) / "pg").start()
        try:
            t0 = time.perf_counter()
            dsn = load(pg.admin_dsn, args.sensors, args.days, start)
            du = subprocess.run(["du", "-sh", str(pg.data_dir)], capture_output=True, text=True).stdout.split("\t")[0]
            print(f"loaded {args.sensors} sensors x {args.days} d = {args.sensors * args.days * 86400:,} rows (30 bands each)"
                  f" in {time.perf_counter() - t0:.0f} s; cluster {du} on disk", flush=True)
            s = asyncio.run(measure(dsn, start, args.days, args.reps, args.raw_reps, not args.no_gc_freeze))
        finally:
            pg.destroy()
    ratios = {}
    for served, raw, label in (("hourly", "raw_hourly", f"(a) hourly levels + spectra, {args.days} d"),
                               ("temporal", "raw_temporal", "(b) NGSI-LD temporal, 1 d of 1 min")):
        ratios[served] = p95(s[raw]) / p95(s[served])
        print(f"{label}: served p95 {p95(s[served]):.1f} ms (median {statistics.median(s[served]):.1f}, n={len(s[served])})"
              f" vs raw 1 s rows p95 {p95(s[raw]):.1f} ms (median {statistics.median(s[raw]):.1f}, n={len(s[raw])}): x{ratios[served]:.1f}")
    print(f"api: hourly_p95_ms={p95(s['hourly']):.1f} temporal_p95_ms={p95(s['temporal']):.1f} speedup_vs_raw={min(ratios.values()):.1f}")


if __name__ == "__main__":
    main()
