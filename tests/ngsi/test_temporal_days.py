"""Pre-rendered days of minutes: the same bytes as the live answer, and never a stale one.

A real PostgreSQL with two UTC days of 1-minute aggregates for two sensors (awkward
rows included: NULL and NaN levels, missing spectra, 0.05 dB ties). Each test asks the
context source first live, then after ``render_settled``, and compares the raw bytes.
Tampering with a stored rendering proves which path answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from ngsi.context_source import build_router
from ngsi.query import TimeRange
from ngsi.settings import NgsiSettings
from ngsi.temporal_days import render_settled, whole_days
from sonopolis.bootstrap import RoleDsns
from tests.ngsi import seed

pytestmark = pytest.mark.anyio

DAY0 = datetime(2024, 6, 10, tzinfo=timezone.utc)
NOW = DAY0 + timedelta(days=2, hours=1)  # both days settled
SETTINGS = NgsiSettings(max_page=200, max_instances=5000, day_documents_settle_s=900, day_documents_lookback_days=2,
                        day_documents_keep_days=35)
SERIES = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1M"


@dataclass
class Ctx:
    client: httpx.AsyncClient
    pool: AsyncConnectionPool
    dsn: str

    async def render(self, now: datetime = NOW, settings: NgsiSettings = SETTINGS) -> int:
        async with self.pool.connection() as conn:
            return await render_settled(conn, "smart", settings, now)

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
async def ctx(db: RoleDsns) -> AsyncIterator[Ctx]:
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1min", DAY0, timedelta(minutes=1), 2 * 1440, sensors=seed.SENSORS[:2])
        for minute, setting in ((3, "laeq = NULL"), (4, "laeq = 'NaN'"), (5, "bands = NULL"), (6, "bands[2] = NULL"),
                                (7, "laeq = 55.25, la50 = 55.35"), (1500, "bands = array_fill(NULL::real, ARRAY[30])")):
            conn.execute(f"UPDATE smart.levels_1min SET {setting} WHERE sensor_id = 'se-jacquard' AND bucket = %s",
                         (DAY0 + timedelta(minutes=minute),))
    async with AsyncConnectionPool(db.smart, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
        app = FastAPI()
        app.include_router(build_router(pool, settings=SETTINGS))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sonopolis.test",
                                     timeout=httpx.Timeout(20.0)) as client:
            yield Ctx(client, pool, db.smart)


def _params(**extra: str) -> dict[str, str]:
    return {"type": "NoiseLevelObserved", "timerel": "between", "timeAt": "2024-06-10T00:00:00Z",
            "endTimeAt": "2024-06-12T00:00:00Z", **extra}


QUERIES = [
    ({"id": SERIES}, {}),
    ({"id": SERIES, "attrs": "LAeq,thirdOctaveBands,sirenCount"}, {}),
    ({"idPattern": "^urn:ngsi-ld:NoiseLevelObserved:se-.*:PT1M$", "lastN": "2880"}, {}),
    ({"id": SERIES}, {"Accept": "application/ld+json"}),
    ({"id": SERIES, "endTimeAt": "2024-06-11T00:00:00Z"}, {}),
]


async def test_rendered_answers_are_the_live_bytes(ctx: Ctx) -> None:
    live = []
    for extra, headers in QUERIES:
        r = await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(**extra), headers=headers)
        assert r.status_code == 200, r.text
        live.append((r.content, r.headers.get("content-type"), r.headers.get("link")))
    assert await ctx.render() == 4  # 2 sensors x 2 settled days
    assert ctx.sql("SELECT count(DISTINCT (sensor_id, day)) FROM smart.ngsi_temporal_days") == [(4,)]
    for (extra, headers), expected in zip(QUERIES, live, strict=True):
        r = await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(**extra), headers=headers)
        assert (r.content, r.headers.get("content-type"), r.headers.get("link")) == expected, extra
    (entity,) = [e for e in (await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(id=SERIES))).json()]
    assert len(entity["LA90"]) == 2880 and len(entity["LAeq"]) == 2878  # NULL and NaN: no instance
    assert len(entity["thirdOctaveBands"]) == 2878  # no spectrum at minute 5 nor at 1500
    # the answer really came from the renderings: tamper with one, see it
    ctx.sql("UPDATE smart.ngsi_temporal_days SET instances = %s WHERE sensor_id = 'se-jacquard' AND day = %s AND attr = 'sirenCount'",
            (b'[{"type":"Property","value":-1,"observedAt":"2024-06-11T00:00:00Z"}]', date(2024, 6, 11)))
    (entity,) = (await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(id=SERIES))).json()
    assert entity["sirenCount"][-1]["value"] == -1 and len(entity["sirenCount"]) == 1441


async def test_a_recomputed_minute_is_answered_live_until_rendered_again(ctx: Ctx) -> None:
    await ctx.render()
    before = (await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(id=SERIES))).content
    # late frames: the ingestion recomputes a minute from more seconds, with a new level
    ctx.sql("UPDATE smart.levels_1min SET laeq = 99.04, n_seconds = n_seconds + 1 WHERE sensor_id = 'se-jacquard' AND bucket = %s",
            (DAY0 + timedelta(hours=30),))
    ctx.sql("UPDATE smart.ngsi_temporal_days SET instances = '[]' WHERE sensor_id = 'se-jacquard' AND day = %s AND attr = 'LAeq'",
            (date(2024, 6, 11),))  # the stale rendering, emptied: an answer using it would lack day 2
    (entity,) = (await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(id=SERIES))).json()
    laeq = {i["observedAt"]: i["value"] for i in entity["LAeq"]}
    assert laeq["2024-06-11T06:00:00Z"] == 99.0 and len(laeq) == 1438 + 1440  # live, both days
    after_live = (await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(id=SERIES))).content
    assert after_live != before
    assert await ctx.render() == 1  # only the recomputed sensor-day
    assert (await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(id=SERIES))).content == after_live


async def test_what_renderings_do_not_answer(ctx: Ctx) -> None:
    await ctx.render()
    ctx.sql("UPDATE smart.ngsi_temporal_days SET instances = '[]'")  # any answer from them would be empty
    cases = [
        _params(id=SERIES, lastN="10"),  # fewer than the window holds
        _params(id=SERIES, timeAt="2024-06-10T06:00:00Z"),  # not whole days
        _params(id=SERIES, q="LAeq>0"),
        _params(id=SERIES, options="temporalValues"),
        _params(id=f"{SERIES}:2024-06-10T00:10:00Z"),  # one bucket
    ]
    for params in cases:
        r = await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=params)
        assert r.status_code == 200, (params, r.text)
        (entity,) = r.json()
        assert entity.get("LA90"), params  # live instances
    r = await ctx.client.get("/ngsi-ld/v1/temporal/entities", params=_params(id=SERIES, lastN="10"))
    assert len(r.json()[0]["LA90"]) == 10


async def test_unsettled_days_are_not_rendered_and_old_ones_purged(ctx: Ctx) -> None:
    assert await ctx.render(now=DAY0 + timedelta(days=1, minutes=10)) == 0  # day 1 ended 10 min ago: settling
    assert await ctx.render(now=DAY0 + timedelta(days=1, minutes=20)) == 2  # now it is rendered, day 2 is not over
    short = SETTINGS.model_copy(update={"day_documents_keep_days": 1})
    assert await ctx.render(now=NOW, settings=short) == 2  # day 2 rendered; day 1 is older than one kept day
    assert ctx.sql("SELECT DISTINCT day FROM smart.ngsi_temporal_days") == [(date(2024, 6, 11),)]
    off = SETTINGS.model_copy(update={"day_documents_keep_days": 0})
    assert await ctx.render(settings=off) == 0


def test_whole_days() -> None:
    d = datetime(2024, 6, 10, tzinfo=timezone.utc)
    assert whole_days(TimeRange(since=d, before=d + timedelta(days=2))) == [date(2024, 6, 10), date(2024, 6, 11)]
    assert whole_days(TimeRange(since=d + timedelta(hours=1), before=d + timedelta(days=1))) is None
    assert whole_days(TimeRange(after=d, before=d + timedelta(days=1))) is None
    assert whole_days(TimeRange(since=d)) is None
    assert whole_days(TimeRange(since=d, before=d + timedelta(days=40))) is None  # longer than MAX_DAYS


async def test_lookups_are_never_prepared(ctx: Ctx) -> None:
    """psycopg prepares a statement on its sixth run; PostgreSQL's generic plan for the stamps
    then reads every sensor's window through the bucket index (57,600 rows for a day of 40
    sensors). The lookups run unprepared, so each gets its per-sensor primary-key plan."""
    from ngsi.temporal_days import lookup

    await ctx.render()
    async with ctx.pool.connection() as conn:
        for _ in range(8):
            found = await lookup(conn, "smart", ["se-jacquard", "se-chavanelle"], [date(2024, 6, 10), date(2024, 6, 11)], None)
            assert set(found) == {"se-jacquard", "se-chavanelle"} and found["se-jacquard"].n_instances == 2880
        prepared = await (await conn.execute("SELECT statement FROM pg_prepared_statements")).fetchall()
    assert not [s for (s,) in prepared if "levels_1min" in s], prepared
