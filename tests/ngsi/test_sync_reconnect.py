"""``sonopolis ngsi-sync`` rides out a PostgreSQL restart and catches up from its stored cursor.

The service loop (``ngsi.cli._run``) against a private PostgreSQL cluster that the test
stops and starts, and the NGSI-LD broker double over the real httpx client: the
buckets written while the database was away and after it came back reach the broker,
each exactly once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from ngsi.cli import _run
from ngsi.settings import NgsiSettings
from simulators.ngsi_broker import BrokerTransport, NgsiBrokerDouble
from sonopolis.bootstrap import bootstrap
from tests import services
from tests.ngsi import seed

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _observations(broker: NgsiBrokerDouble) -> set[str]:
    return {eid for eid, e in broker.store().items() if e.body["type"] == "NoiseLevelObserved"}


async def _until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_database_restart_is_ridden_out_and_caught_up(pg_tmp: Path) -> None:
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    first = hour - timedelta(hours=30)  # settled buckets, well inside the backfill window
    with services.private_postgres(pg_tmp) as pg:
        dsn = bootstrap(pg.admin_dsn, "sonopolis").smart
        seed.migrate(dsn)
        with psycopg.connect(dsn) as conn:
            seed.add_sensors(conn)
            seed.add_aggregates(conn, "levels_1h", first, timedelta(hours=1), 6)
        broker = NgsiBrokerDouble()
        settings = NgsiSettings(broker_url="http://broker", context_url="http://sonopolis.test/ctx.jsonld", periods=["1h"],
                                backfill_days=3, interval_s=1.0, backoff_initial_s=0.2, backoff_max_s=1.0)
        service = asyncio.create_task(_run(dsn, "smart", settings, once=False, transport=BrokerTransport(broker)))
        try:
            n = len(seed.SENSORS)
            await _until(lambda: len(_observations(broker)) == 6 * n, 30, "the first 6 hours of every sensor")
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(2.5)  # rounds fail meanwhile: the loop must survive them
            assert not service.done(), "ngsi-sync gave up while the database was down"
            await asyncio.to_thread(pg.start)
            with psycopg.connect(dsn) as conn:  # hours 6..11 arrive after the restart
                seed.add_aggregates(conn, "levels_1h", first + timedelta(hours=6), timedelta(hours=1), 6)
            await _until(lambda: len(_observations(broker)) == 12 * n, 60, "the 6 hours written after the restart")
        finally:
            service.cancel()
            with pytest.raises(asyncio.CancelledError):
                await service
    upserts = [r for r in broker.requests if r[1].endswith("/entityOperations/upsert")]
    assert upserts and all(status in (200, 201, 204, 207) for _, _, status in upserts)
    assert len(_observations(broker)) == 12 * n  # each bucket once: ids are per sensor and hour


def test_a_database_not_up_at_start_is_waited_for_not_a_traceback(caplog) -> None:  # type: ignore[no-untyped-def]
    """The first migration ran outside the reconnect loop: a database still starting (compose) was a traceback."""
    import asyncio

    from ngsi.cli import _run
    from ngsi.settings import NgsiSettings
    from sonopolis.embedded import free_port

    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    settings = NgsiSettings(broker_url="http://broker", context_url="https://x.example/ctx.jsonld")
    assert asyncio.run(_run(dsn, "smart", settings, once=True)) == 1  # --once: one try, then a failure code
    with pytest.raises(TimeoutError):  # a service: waits and retries until stopped
        asyncio.run(asyncio.wait_for(_run(dsn, "smart", settings, once=False), timeout=3))
    assert sum("database unavailable, reconnecting" in r.message for r in caplog.records) >= 2
