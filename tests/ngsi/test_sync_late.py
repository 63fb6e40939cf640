"""Late frames behind the cursor: the look-back pass (re)sends recomputed buckets, and only those."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from ngsi.client import BrokerClient
from ngsi.mapping import published_round
from ngsi.settings import NgsiSettings
from ngsi.sync import Syncer
from simulators.ngsi_broker import BrokerTransport, NgsiBrokerDouble
from sonopolis.bootstrap import RoleDsns
from tests.ngsi import seed

pytestmark = pytest.mark.anyio

CTX = "https://bruit.example.fr/ngsi-ld/contexts/sonopolis.jsonld"
T0 = datetime(2024, 6, 10, 0, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=2)
DAY = datetime(2024, 6, 9, 22, tzinfo=timezone.utc)  # 2024-06-10 local (Paris)
N_SENSORS = len(seed.SENSORS)


def oid(sensor: str, period: str, start: datetime) -> str:
    return f"urn:ngsi-ld:NoiseLevelObserved:{sensor}:{period}:{start:%Y-%m-%dT%H:%M:%SZ}"


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def conn(db: RoleDsns) -> AsyncIterator[psycopg.AsyncConnection]:
    """3 sensors, 12 hourly buckets from T0, one daily bucket + Lden."""
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as c:
        seed.add_sensors(c)
        seed.add_aggregates(c, "levels_1h", T0, timedelta(hours=1), 12)
        seed.add_aggregates(c, "levels_1d", DAY, timedelta(days=1), 1)
        seed.add_lden(c, date(2024, 6, 10))
    async with await psycopg.AsyncConnection.connect(db.smart) as c:
        yield c


class Harness:
    def __init__(self, conn: psycopg.AsyncConnection, **kw: object) -> None:
        base: dict[str, object] = dict(broker_url="http://broker", context_url=CTX, chunk_size=7, periods=["1h", "1d"], backfill_days=30)
        base.update(kw)
        self.settings = NgsiSettings(**base)  # type: ignore[arg-type]
        self.broker = NgsiBrokerDouble()
        self.conn = conn
        self.http = httpx.AsyncClient(transport=BrokerTransport(self.broker), base_url="http://broker", timeout=httpx.Timeout(5.0))
        self.syncer = Syncer(conn, BrokerClient(self.http, self.settings, sleep=no_sleep), self.settings, now=lambda: NOW)

    def upserts(self) -> int:
        return sum(1 for _, path, _ in self.broker.requests if path.endswith("/upsert"))

    def writes(self) -> dict[str, int]:
        return {k: v.writes for k, v in self.broker.store().items()}

    async def late_frames(self, table: str, sensor: str, bucket: datetime, *, coverage: float, laeq: float) -> None:
        """What the ingestion does when late frames land: the bucket is recomputed (more seconds, new values)."""
        seconds = 86_400 if table == "levels_1d" else 3600
        await self.conn.execute(
            f"UPDATE smart.{table} SET coverage = %s, n_seconds = %s, laeq = %s WHERE sensor_id = %s AND bucket = %s",  # noqa: S608 - fixed names
            (coverage, int(seconds * coverage), laeq, sensor, bucket),
        )
        await self.conn.commit()


async def test_low_coverage_bucket_filled_later_is_pushed_on_a_later_round(conn: psycopg.AsyncConnection) -> None:
    h = Harness(conn)
    late = T0 + timedelta(hours=4)
    await h.late_frames("levels_1h", "se-jacquard", late, coverage=0.2, laeq=58.0)
    async with h.http:
        first = await h.syncer.run_once()
        assert first.caught_up and oid("se-jacquard", "PT1H", late) not in h.broker.store()
        assert h.broker.count(type_="NoiseLevelObserved") == N_SENSORS * 13 - 1
        # the cursor is past it; the sensor's backlog arrives and fills the bucket
        assert (await h.syncer.cursor("1h"))[0] == T0 + timedelta(hours=11)
        await h.late_frames("levels_1h", "se-jacquard", late, coverage=0.9, laeq=63.4)
        second = await h.syncer.run_once()
    assert second.caught_up and second.streams["1h"].revisited == 1 and second.pushed == 1
    stored = h.broker.store()[oid("se-jacquard", "PT1H", late)]
    assert stored.body["LAeq"]["value"] == 63.4 and stored.body["coverage"]["value"] == 0.9
    assert set(h.writes().values()) == {1}  # only the newly due bucket was sent
    assert h.broker.count(type_="NoiseLevelObserved") == N_SENSORS * 13


async def test_pushed_bucket_recomputed_by_late_frames_is_resent_with_new_values(conn: psycopg.AsyncConnection) -> None:
    h = Harness(conn)
    changed = oid("lyon-bellecour", "PT1H", T0 + timedelta(hours=7))
    async with h.http:
        await h.syncer.run_once()
        old = h.broker.store()[changed].body["LAeq"]["value"]
        await h.late_frames("levels_1h", "lyon-bellecour", T0 + timedelta(hours=7), coverage=1.0, laeq=old + 4.2)
        report = await h.syncer.run_once()
    assert report.streams["1h"].revisited == 1 and report.pushed == 1
    assert h.broker.store()[changed].body["LAeq"]["value"] == published_round(old + 4.2, 1)
    writes = h.writes()
    assert writes.pop(changed) == 2 and set(writes.values()) == {1}


async def test_daily_bucket_recomputed_is_resent(conn: psycopg.AsyncConnection) -> None:
    h = Harness(conn)
    daily = oid("se-chavanelle", "P1D", DAY)
    async with h.http:
        await h.syncer.run_once()
        assert h.broker.store()[daily].body["Lden"]["value"] == 66.0
        await h.late_frames("levels_1d", "se-chavanelle", DAY, coverage=0.99, laeq=61.5)
        await conn.execute("UPDATE smart.lden_daily SET lden = 67.5 WHERE sensor_id = 'se-chavanelle'")
        await conn.commit()
        report = await h.syncer.run_once()
    assert report.streams["1d"].revisited == 1 and report.streams["1h"].revisited == 0
    body = h.broker.store()[daily].body
    assert body["LAeq"]["value"] == 61.5 and body["Lden"]["value"] == 67.5
    assert h.broker.store()[daily].writes == 2


async def test_nothing_resent_when_nothing_changed(conn: psycopg.AsyncConnection) -> None:
    h = Harness(conn)
    async with h.http:
        await h.syncer.run_once()
        requests, writes = h.upserts(), h.writes()
        assert len(writes) == N_SENSORS * 14  # 12 hours + 1 day + the device, per sensor
        for _ in range(3):
            report = await h.syncer.run_once()
            assert report.pushed == 0 and report.caught_up
    assert h.upserts() == requests and h.writes() == writes
    # the bookkeeping holds one row per published bucket of the window, no more
    rows = await (await conn.execute("SELECT stream, count(*) FROM smart.ngsi_published GROUP BY stream ORDER BY stream")).fetchall()
    assert rows == [("1d", N_SENSORS), ("1h", N_SENSORS * 12)]


async def test_buckets_older_than_the_window_are_left_alone(conn: psycopg.AsyncConnection) -> None:
    # window: buckets that ended within 40 h of NOW (T0 + 48 h) -> hourly buckets from T0 + 7 h
    h = Harness(conn, revisit_hours=40, periods=["1h"])
    old, recent = T0 + timedelta(hours=2), T0 + timedelta(hours=9)
    await h.late_frames("levels_1h", "se-jacquard", old, coverage=0.2, laeq=55.0)
    async with h.http:
        await h.syncer.run_once()
        await h.late_frames("levels_1h", "se-jacquard", old, coverage=0.95, laeq=66.0)
        await h.late_frames("levels_1h", "se-chavanelle", T0 + timedelta(hours=3), coverage=1.0, laeq=71.0)
        await h.late_frames("levels_1h", "se-chavanelle", recent, coverage=1.0, laeq=71.0)
        report = await h.syncer.run_once()
    assert report.streams["1h"].revisited == 1
    assert oid("se-jacquard", "PT1H", old) not in h.broker.store()
    assert h.broker.store()[oid("se-chavanelle", "PT1H", T0 + timedelta(hours=3))].writes == 1
    assert h.broker.store()[oid("se-chavanelle", "PT1H", recent)].writes == 2
    # no bookkeeping is kept outside the window
    oldest = (await (await conn.execute("SELECT min(bucket) FROM smart.ngsi_published")).fetchone())[0]
    assert oldest == T0 + timedelta(hours=7)


async def test_parked_bucket_is_retried_only_when_its_data_change(conn: psycopg.AsyncConnection) -> None:
    h = Harness(conn, periods=["1h"])
    bad = oid("se-jacquard", "PT1H", T0 + timedelta(hours=5))
    h.broker.reject = {bad: "value out of the city's accepted range"}
    async with h.http:
        first = await h.syncer.run_once()
        assert first.streams["1h"].rejected == 1 and bad not in h.broker.store()
        requests = h.upserts()
        await h.syncer.run_once()
        assert h.upserts() == requests  # parked, not retried every round
        h.broker.reject = {}
        await h.late_frames("levels_1h", "se-jacquard", T0 + timedelta(hours=5), coverage=1.0, laeq=60.0)
        report = await h.syncer.run_once()
    assert report.streams["1h"].revisited == 1 and h.broker.store()[bad].body["LAeq"]["value"] == 60.0
    assert (await (await conn.execute("SELECT count(*) FROM smart.ngsi_rejected")).fetchone())[0] == 0


async def test_lookback_is_bounded_per_round(conn: psycopg.AsyncConnection) -> None:
    """Without bookkeeping (e.g. just after the migration) the window is re-sent once, revisit_max per round."""
    h = Harness(conn, periods=["1h"], revisit_max=5)
    async with h.http:
        await h.syncer.run_once()
        await conn.execute("DELETE FROM smart.ngsi_published")
        await conn.commit()
        resent = []
        for _ in range(10):
            report = await h.syncer.run_once()
            resent.append(report.streams["1h"].revisited)
            if report.caught_up:
                break
    assert resent == [5, 5, 5, 5, 5, 5, 5, 1]  # 36 hourly buckets, then caught up
    assert {v for k, v in h.writes().items() if ":PT1H:" in k} == {2}
