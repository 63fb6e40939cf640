"""Admin bearer token, per-IP rate limiting, and the absence of any security class."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from pydantic import ValidationError
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.models import OpenEvent, WebhookCreate
from api.security import TokenBuckets
from api.settings import ApiSettings
from tests.api.conftest import make_settings

pytestmark = pytest.mark.anyio

SECURITY_CLASSES = ("gunshot", "glass_break", "crash", "spray_can", "scream", "explosion")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic dGVzdDp0ZXN0"},
                                     {"Authorization": "Bearer "}])
async def test_admin_routes_refuse_missing_or_wrong_token(client: httpx.AsyncClient, smart_dsn: str, headers: dict) -> None:
    for method, url, kw in (("POST", "/v1/admin/webhooks", {"json": {"url": "https://h.example.org/x"}}),
                            ("GET", "/v1/admin/webhooks", {}),
                            ("POST", "/v1/admin/exports?day=2020-01-01", {})):
        r = await client.request(method, url, headers=headers, **kw)
        assert r.status_code == 401, (url, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_admin_route_accepts_right_token(client: httpx.AsyncClient, smart_dsn: str, admin: dict) -> None:
    r = await client.post("/v1/admin/webhooks", json={"url": "https://h.example.org/x"}, headers=admin)
    assert r.status_code == 201, r.text
    assert len(r.json()["secret"]) >= 32
    listed = await client.get("/v1/admin/webhooks", headers=admin)
    assert [w["url"] for w in listed.json()] == ["https://h.example.org/x"]
    assert "secret" not in listed.json()[0]


async def test_admin_routes_off_without_configured_token(tmp_path, smart_dsn: str) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, admin_token=None)
    async with AsyncConnectionPool(smart_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
        app = create_app(settings, pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/v1/admin/webhooks", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403 and r.json()["type"].endswith("admin-disabled")


async def test_rate_limit_429_with_retry_after_per_client(tmp_path, smart_dsn: str) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, rate_limit_per_minute=60, rate_limit_burst=5, trust_forwarded_for=True)
    async with AsyncConnectionPool(smart_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
        app = create_app(settings, pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            a = {"X-Forwarded-For": "203.0.113.7"}
            codes = [(await c.get("/v1/sensors", headers=a)).status_code for _ in range(5)]
            limited = await c.get("/v1/sensors", headers=a)
            other = await c.get("/v1/sensors", headers={"X-Forwarded-For": "198.51.100.9"})
            # What a client writes left of the proxy's entry is not an address: forging it changes nothing.
            forged = [(await c.get("/v1/sensors", headers={"X-Forwarded-For": f"10.9.9.{i}, 203.0.113.7"})).status_code for i in range(3)]
    assert forged == [429] * 3
    assert codes == [200] * 5
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    assert other.status_code == 200, "another client must not be limited by the first one's usage"


async def test_forwarded_headers_count_only_from_trusted_proxies(tmp_path, smart_dsn: str) -> None:  # type: ignore[no-untyped-def]
    """A peer outside ``trusted_proxies`` keeps its own address (rate limit) and scheme, whatever it sends."""
    settings = make_settings(tmp_path, rate_limit_per_minute=60, rate_limit_burst=2, trust_forwarded_for=True,
                             trusted_proxies=["192.0.2.0/28"])
    forged = {"X-Forwarded-Proto": "https"}
    async with AsyncConnectionPool(smart_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
        app = create_app(settings, pool)
        async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 1)), base_url="http://t") as stranger,
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.5", 1)), base_url="http://t") as proxy):
            bypass = [(await stranger.get("/ngsi-ld/csourceRegistration.json", headers={**forged, "X-Forwarded-For": f"203.0.113.{i}"}))
                      for i in range(3)]
            relayed = [(await proxy.get("/ngsi-ld/csourceRegistration.json", headers={**forged, "X-Forwarded-For": f"203.0.113.{i}"}))
                       for i in range(3)]
    assert [r.status_code for r in bypass] == [200, 200, 429]
    assert bypass[0].json()["endpoint"].startswith("http://t")
    assert [r.status_code for r in relayed] == [200, 200, 200], "each forwarded client has its own bucket"
    assert relayed[0].json()["endpoint"].startswith("https://t")


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert [str(n) for n in ApiSettings().trusted_proxies] == ["127.0.0.1/32", "::1/128"]
    assert [str(n) for n in ApiSettings(trusted_proxies=["172.30.20.10", "10.1.0.0/16"]).trusted_proxies] == [
        "172.30.20.10/32", "10.1.0.0/16"]
    for value in (["*"], ["10.1.0.1/16"], ["proxy"], []):  # "*" would trust anyone; a host name is not checked
        with pytest.raises(ValidationError, match="trusted_proxies"):
            ApiSettings(trusted_proxies=value)


def test_token_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    b = TokenBuckets(per_minute=120, burst=2, clock=lambda: now[0])
    assert b.take("ip") == 0 and b.take("ip") == 0
    wait = b.take("ip")
    assert wait == pytest.approx(0.5)
    now[0] += 0.5
    assert b.take("ip") == 0


def test_security_classes_cannot_exist_on_the_smart_side(smart_dsn: str) -> None:
    # the open event table refuses them
    with psycopg.connect(smart_dsn) as conn:
        for cls in SECURITY_CLASSES:
            with pytest.raises(psycopg.errors.CheckViolation):
                with conn.transaction():
                    conn.execute("INSERT INTO smart.api_events (event_type, sensor_id, started_at) VALUES (%s, 'se-jacquard', now())", (cls,))
        # no relation or column of the smart schema is about them
        names = [r[0] for r in conn.execute(
            "SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = 'smart'")]
    assert names and not [n for n in names if any(c in n for c in SECURITY_CLASSES + ("camera", "alert"))]
    # nor can the API's models carry them
    for cls in SECURITY_CLASSES:
        with pytest.raises(ValidationError):
            OpenEvent(id=1, event_type=cls, sensor_id="s", started_at="2025-01-01T00:00:00Z")  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            WebhookCreate(url="https://h.example.org", event_types=[cls])  # type: ignore[list-item]


async def test_openapi_event_types_are_only_public_ones(client: httpx.AsyncClient, smart_dsn: str) -> None:
    spec = (await client.get("/openapi.json")).json()
    text = str(spec)
    assert not [c for c in SECURITY_CLASSES if c in text]
    assert spec["components"]["schemas"]["OpenEvent"]["properties"]["event_type"]["enum"] == ["noise_threshold_exceeded", "sensor_silent"]
    r = await client.get("/v1/events", params={"type": "gunshot"})
    assert r.status_code == 422


async def test_rate_limit_counts_an_ipv6_client_by_its_64_prefix(tmp_path, smart_dsn: str) -> None:  # type: ignore[no-untyped-def]
    """An IPv6 subscriber gets a whole /64 (RFC 6177) and picks any address in it: counted per address, it was
    never limited (a new address per request). IPv4-mapped addresses count as their IPv4 address."""
    settings = make_settings(tmp_path, rate_limit_per_minute=60, rate_limit_burst=3)
    async with AsyncConnectionPool(smart_dsn, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
        app = create_app(settings, pool)

        async def get(addr: str) -> int:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(addr, 1)), base_url="http://t") as c:
                return (await c.get("/v1/sensors")).status_code

        same_64 = [await get(f"2001:db8:1:2::{i}") for i in range(1, 5)]
        other_64 = await get("2001:db8:1:3::1")
        v4 = [await get("192.0.2.44") for _ in range(3)] + [await get("::ffff:192.0.2.44")]
    assert same_64 == [200, 200, 200, 429]
    assert other_64 == 200
    assert v4 == [200, 200, 200, 429]
