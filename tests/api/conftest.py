"""Fixtures of the open API tests: a migrated smart schema with real rows, the app in-process."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from api.app import create_app
from api.settings import ApiSettings, ExportSettings, OpenEventSettings
from sonopolis.bootstrap import RoleDsns
from tests.api import seed

ADMIN_TOKEN = "test-admin-token-0123456789"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def smart_dsn(db: RoleDsns) -> str:
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
    return db.smart


@pytest.fixture
def recent_dsn(smart_dsn: str) -> str:
    """The last 3 hours of data for every sensor (up to one minute ago)."""
    end = NOW.replace(second=0) - dt.timedelta(minutes=1)
    with psycopg.connect(smart_dsn) as conn:
        seed.add_levels(conn, end - dt.timedelta(hours=3), end, step_s=10)
    return smart_dsn


def make_settings(tmp_path: Path, **kw) -> ApiSettings:  # type: ignore[no-untyped-def]
    base = dict(
        admin_token=SecretStr(ADMIN_TOKEN), rate_limit_per_minute=100_000, rate_limit_burst=10_000,
        exports=ExportSettings(directory=tmp_path / "opendata", base_url="https://data.example.org"),
        events=OpenEventSettings(laeq_5min_threshold_db=60.0, silent_after_min=10, sse_poll_s=0.1, run_in_api=False,
                                 webhook_backoff_initial_s=0.2, webhook_max_attempts=3),
    )
    base.update(kw)
    return ApiSettings(**base)


@pytest.fixture
def settings(tmp_path: Path) -> ApiSettings:
    return make_settings(tmp_path)


@pytest.fixture
async def pool(smart_dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    async with AsyncConnectionPool(smart_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False) as p:
        yield p


@pytest.fixture
async def client(settings: ApiSettings, pool: AsyncConnectionPool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def artifacts() -> Iterator[Path]:
    path = Path(__file__).resolve().parents[1] / "artifacts"
    path.mkdir(exist_ok=True)
    yield path
