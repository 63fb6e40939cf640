"""ngsi-sync against the broker double, over real PostgreSQL: chunks, 207, outage, cursor, re-sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from ngsi.client import BrokerClient, BrokerRefused, BrokerUnavailable
from ngsi.mapping import PERIODS, observation_from_row, published_round
from ngsi.settings import NgsiSettings
from ngsi.sync import Syncer
from simulators.ngsi_broker import BrokerTransport, NgsiBrokerDouble
from sonopolis.bootstrap import RoleDsns
from tests.ngsi import seed

pytestmark = pytest.mark.anyio

CTX = "https://bruit.example.fr/ngsi-ld/contexts/sonopolis.jsonld"
T0 = datetime(2024, 6, 10, 0, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(days=2)
N_SENSORS = len(seed.SENSORS)


async def no_sleep(_: float) -> None:
    return None


def settings(**kw: object) -> NgsiSettings:
    base = dict(broker_url="http://broker", context_url=CTX, chunk_size=7, periods=["1h", "1d"], backfill_days=30, max_attempts=3)
    base.update(kw)
    return NgsiSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def populated(db: RoleDsns) -> str:
    """3 sensors, 12 hourly buckets each, 1 daily bucket each (local midnight, Paris) + Lden."""
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1h", T0, timedelta(hours=1), 12)
        seed.add_aggregates(conn, "levels_1d", datetime(2024, 6, 9, 22, tzinfo=timezone.utc), timedelta(days=1), 1)
        seed.add_lden(conn, date(2024, 6, 10))
    return db.smart


@pytest.fixture
async def conn(populated: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(populated) as c:
        yield c


def make(broker: NgsiBrokerDouble, conn: psycopg.AsyncConnection, s: NgsiSettings) -> tuple[Syncer, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=BrokerTransport(broker), base_url="http://broker", timeout=httpx.Timeout(5.0))
    return Syncer(conn, BrokerClient(http, s, sleep=no_sleep), s, now=lambda: NOW), http


EXPECTED = N_SENSORS * (12 + 1)  # observations


async def test_pushes_everything_in_chunks_then_nothing_more(conn: psycopg.AsyncConnection) -> None:
    broker = NgsiBrokerDouble()
    syncer, http = make(broker, conn, settings())
    async with http:
        report = await syncer.run_once()
        assert report.caught_up
        assert broker.count(type_="NoiseLevelObserved") == EXPECTED
        assert broker.count(type_="Device") == N_SENSORS
        assert report.pushed == EXPECTED + N_SENSORS
        upserts = [r for r in broker.requests if r[1].endswith("/upsert")]
        assert all(status in (201, 204) for _, _, status in upserts)
        assert len(upserts) >= EXPECTED // 7  # chunks of 7
        # the stored entity is exactly the mapping of the row, with our @context in the body
        stored = broker.store()["urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T03:00:00Z"]
        assert stored.context == [CTX]
        assert stored.body["LAeq"]["value"] == published_round(seed.level(0, 3), 1)
        assert stored.body["refDevice"]["object"] == "urn:ngsi-ld:Device:se-jacquard"
        daily = broker.store()["urn:ngsi-ld:NoiseLevelObserved:se-chavanelle:P1D:2024-06-09T22:00:00Z"]
        assert daily.body["Lden"]["value"] == 66.0 and daily.body["LANight"]["value"] == 55.0
        before = len(broker.requests)
        again = await syncer.run_once()
        assert again.pushed == 0 and len(broker.requests) == before


async def test_only_settled_buckets_with_enough_coverage(conn: psycopg.AsyncConnection) -> None:
    broker = NgsiBrokerDouble()
    s = settings(periods=["1h"], settle_s=3600)
    http = httpx.AsyncClient(transport=BrokerTransport(broker), base_url="http://broker", timeout=httpx.Timeout(5.0))
    await conn.execute("UPDATE smart.levels_1h SET coverage = 0.2 WHERE sensor_id = 'lyon-bellecour' AND bucket = %s", (T0,))
    await conn.commit()
    # "now" = 10:30: buckets ending at or before 09:30 are settled -> 09:00 bucket not yet (ends 10:00)
    syncer = Syncer(conn, BrokerClient(http, s, sleep=no_sleep), s, now=lambda: T0 + timedelta(hours=10, minutes=30))
    async with http:
        await syncer.run_once()
    assert broker.count(type_="NoiseLevelObserved") == N_SENSORS * 9 - 1
    assert "urn:ngsi-ld:NoiseLevelObserved:lyon-bellecour:PT1H:2024-06-10T00:00:00Z" not in broker.store()


async def test_partial_failures_207_rejected_parked_flaky_retried(conn: psycopg.AsyncConnection) -> None:
    bad = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T05:00:00Z"
    flaky = "urn:ngsi-ld:NoiseLevelObserved:se-chavanelle:PT1H:2024-06-10T06:00:00Z"
    broker = NgsiBrokerDouble(reject={bad: "value out of the city's accepted range"}, flaky={flaky: 2})
    syncer, http = make(broker, conn, settings())
    async with http:
        report = await syncer.run_once()
    assert report.caught_up
    assert bad not in broker.store() and flaky in broker.store()
    assert broker.count(type_="NoiseLevelObserved") == EXPECTED - 1
    assert report.streams["1h"].rejected == 1
    assert any(status == 207 for _, path, status in broker.requests if path.endswith("/upsert"))
    rows = await (await conn.execute("SELECT entity_id, status, problem_type, reason FROM smart.ngsi_rejected")).fetchall()
    assert rows == [(bad, 400, "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", "Invalid entity - value out of the city's accepted range")]
    # the cursor went past the parked entity: the next round does not resend it
    before = len(broker.requests)
    await syncer.run_once()
    assert len(broker.requests) == before


async def test_transient_failures_beyond_the_budget_hold_the_cursor(conn: psycopg.AsyncConnection) -> None:
    flaky = "urn:ngsi-ld:NoiseLevelObserved:se-chavanelle:PT1H:2024-06-10T06:00:00Z"
    broker = NgsiBrokerDouble(flaky={flaky: 3})  # fails all 3 attempts of the first round
    syncer, http = make(broker, conn, settings(periods=["1h"]))
    async with http:
        first = await syncer.run_once()
        assert not first.caught_up and first.streams["1h"].pending == 1
        at, key = await syncer.cursor("1h")
        assert (at, key) == (T0 + timedelta(hours=6), "lyon-bellecour")  # just before the flaky one
        assert flaky not in broker.store()
        second = await syncer.run_once()
    assert second.caught_up and flaky in broker.store()
    assert broker.count(type_="NoiseLevelObserved") == N_SENSORS * 12


@pytest.mark.parametrize("kind", ["unavailable", "refused"])
async def test_outage_then_catch_up_from_the_cursor(conn: psycopg.AsyncConnection, kind: str) -> None:
    broker = NgsiBrokerDouble()
    syncer, http = make(broker, conn, settings(periods=["1h"]))
    async with http:
        await syncer.run_once()
        assert broker.count(type_="NoiseLevelObserved") == N_SENSORS * 12
        cursor_before = await syncer.cursor("1h")
        # six more hours arrive while the broker is down
        with psycopg.connect(conn.info.dsn) as c:
            seed.add_aggregates(c, "levels_1h", T0 + timedelta(hours=12), timedelta(hours=1), 6)
        broker.outage = kind
        with pytest.raises(BrokerUnavailable):
            await syncer.run_once()
        assert await syncer.cursor("1h") == cursor_before
        assert broker.count(type_="NoiseLevelObserved") == N_SENSORS * 12
        broker.outage = None
        report = await syncer.run_once()
    assert report.caught_up and report.streams["1h"].pushed == N_SENSORS * 6
    assert broker.count(type_="NoiseLevelObserved") == N_SENSORS * 18
    assert max(e.writes for e in broker.store().values()) == 1  # nothing sent twice


async def test_resend_after_lost_cursor_is_idempotent(conn: psycopg.AsyncConnection) -> None:
    broker = NgsiBrokerDouble()
    syncer, http = make(broker, conn, settings())
    async with http:
        await syncer.run_once()
        snapshot = {k: v.body for k, v in broker.store().items()}
        # a crash between the upsert and the cursor commit: the cursor is lost
        await conn.execute("DELETE FROM smart.ngsi_sync_cursor")
        await conn.commit()
        await syncer.run_once()
    assert {k: v.body for k, v in broker.store().items()} == snapshot
    assert len(snapshot) == EXPECTED + N_SENSORS
    assert {e.writes for e in broker.store().values()} == {2}


async def test_tenant_and_bearer_token(conn: psycopg.AsyncConnection) -> None:
    broker = NgsiBrokerDouble(token="s3cret")
    syncer, http = make(broker, conn, settings(tenant="saint-etienne", token="s3cret", periods=["1d"]))
    async with http:
        await syncer.run_once()
    assert broker.count("saint-etienne", "NoiseLevelObserved") == N_SENSORS
    assert broker.count() == 0  # nothing in the default tenant
    wrong, http2 = make(NgsiBrokerDouble(token="other"), conn, settings(token="s3cret", periods=["1d"]))
    await conn.execute("DELETE FROM smart.ngsi_sync_cursor")
    await conn.commit()
    async with http2:
        with pytest.raises(BrokerRefused, match="401"):
            await wrong.run_once()


async def test_client_chunks_and_replace_semantics() -> None:
    """``replace`` drops an attribute that vanished from a recomputed bucket; no duplicate entity."""
    broker = NgsiBrokerDouble()
    s = settings(chunk_size=2)
    sensor = {"sensor_id": "se-jacquard", "latitude": 45.44, "longitude": 4.39, "sonometer_class": 1, "timezone": "Europe/Paris"}
    rows = [{"bucket": T0 + timedelta(hours=h), "laeq": 60.0 + h, "lamax": 70.0, "siren": 1} for h in range(5)]
    entities = [observation_from_row(PERIODS["1h"], sensor, r).normalized(CTX) for r in rows]
    async with httpx.AsyncClient(transport=BrokerTransport(broker), base_url="http://broker", timeout=httpx.Timeout(5.0)) as http:
        client = BrokerClient(http, s, sleep=no_sleep)
        out = await client.upsert(entities)
        assert sorted(out.ok) == sorted(e["id"] for e in entities) and out.requests == 3
        recomputed = observation_from_row(PERIODS["1h"], sensor, {**rows[0], "siren": None}).normalized(CTX)
        out = await client.upsert([recomputed])
    assert out.ok == [recomputed["id"]] and broker.count() == 5
    assert "sirenCount" not in broker.store()[recomputed["id"]].body


async def test_a_registry_change_that_commits_behind_the_cursor_still_reaches_the_broker(db: RoleDsns) -> None:
    """``updated_at`` is when a transaction started: one that started first and committed after the
    sync passed a later one was skipped for good (its observations then named a Device the broker lacked)."""
    from ingestion import registry

    seed.migrate(db.smart)
    slow = psycopg.connect(db.smart)
    slow.execute("INSERT INTO smart.sensors (sensor_id, name, latitude, longitude) VALUES ('aaa', 'Slow', 45.4, 4.38)")  # not committed yet
    with psycopg.connect(db.smart) as fast:
        registry.upsert(fast, [registry.Sensor(sensor_id="bbb", name="Fast", latitude=45.5, longitude=4.39)])
    broker = NgsiBrokerDouble()
    async with await psycopg.AsyncConnection.connect(db.smart) as conn:
        syncer, http = make(broker, conn, settings(periods=["1h"]))
        async with http:
            await syncer.run_once()
            assert sorted(e for e in broker.store() if ":Device:" in e) == ["urn:ngsi-ld:Device:bbb"]
            slow.commit()
            slow.close()
            report = await syncer.run_once()
            assert sorted(e for e in broker.store() if ":Device:" in e) == ["urn:ngsi-ld:Device:aaa", "urn:ngsi-ld:Device:bbb"]
            assert report.streams["devices"].revisited == 1
            upserts = len(broker.requests)
            await syncer.run_once()  # nothing new: nothing re-sent
            assert [r for r in broker.requests[upserts:] if r[1].endswith("/upsert")] == []


async def test_207_errors_without_status_are_classified_by_their_etsi_type() -> None:
    """Orion-LD's BatchEntityError ProblemDetails may carry no ``status`` (only type/title/detail): an InternalError
    or LdContextNotAvailable (the broker could not fetch our @context) is transient and retried, not parked."""
    ids = [f"urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T0{h}:00:00Z" for h in range(4)]
    sent: list[list[str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        batch = [e["id"] for e in httpx.Response(200, content=request.content).json()]
        sent.append(batch)
        if len(sent) > 1:
            return httpx.Response(204)
        errors = [{"entityId": ids[0], "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError", "title": "Database Error",
                                                 "detail": "mongocEntitiesUpsert failed"}},
                  {"entityId": ids[1], "error": {"type": "http://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable",
                                                 "title": "Unable to download context", "detail": CTX}},
                  {"entityId": ids[2], "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", "title": "",
                                                 "detail": "Bad Request"}}]
        return httpx.Response(207, json={"success": [ids[3]], "errors": errors})

    entities = [{"id": i, "type": "NoiseLevelObserved", "@context": [CTX]} for i in ids]
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://broker") as http:
        out = await BrokerClient(http, settings(), sleep=no_sleep).upsert(entities)
    assert sent == [ids, ids[:2]]
    assert sorted(out.ok) == sorted([ids[3], ids[0], ids[1]]) and out.pending == {}
    assert list(out.rejected) == [ids[2]] and out.rejected[ids[2]].status == 400
