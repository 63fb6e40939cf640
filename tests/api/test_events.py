"""Open events: detection from the database, signed webhooks with retries, SSE stream."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
import pytest

from api.events import EventStore
from api.settings import ApiSettings, OpenEventSettings
from api.webhooks import SIGNATURE_HEADER, WebhookStore, sign, verify
from tests.api import seed
from tests.api.server import running_api

pytestmark = pytest.mark.anyio

NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
LOUD_FROM, LOUD_TO = NOW - dt.timedelta(minutes=30), NOW - dt.timedelta(minutes=20)


def level(si: int, t: dt.datetime) -> float:
    if si == 0 and LOUD_FROM <= t < LOUD_TO:
        return 72.0 + (t.second % 3)
    return 48.0 + si


@pytest.fixture
def event_dsn(smart_dsn: str) -> str:
    """se-jacquard loud for 10 min, se-chavanelle quiet, se-fourneyron silent for 25 min."""
    start = NOW - dt.timedelta(minutes=40)
    with psycopg.connect(smart_dsn) as conn:
        seed.add_levels(conn, start, NOW, step_s=5, sensors=["se-jacquard", "se-chavanelle"], level=level)
        seed.add_levels(conn, start, NOW - dt.timedelta(minutes=25), step_s=5, sensors=["se-fourneyron"], level=lambda si, t: 50.0)
    return smart_dsn


def expected_loud_windows(threshold: float, settle_s: float = OpenEventSettings().laeq_5min_settle_s) -> set[dt.datetime]:
    """5-min aligned windows of se-jacquard whose energetic mean exceeds ``threshold``, computed here independently
    (rows are 5 s apart with period_s = 5, so every window is fully covered and a plain mean is the weighted one)."""
    out = set()
    since = NOW - dt.timedelta(minutes=30)  # the evaluator's lookback
    t = since.replace(minute=since.minute - since.minute % 5)
    while t + dt.timedelta(minutes=5, seconds=settle_s) <= NOW:  # judged only once settled
        vals = [level(0, t + dt.timedelta(seconds=s)) for s in range(0, 300, 5)]
        if 10 * math.log10(sum(10 ** (v / 10) for v in vals) / len(vals)) > threshold:
            out.add(t)
        t += dt.timedelta(minutes=5)
    return out


async def _evaluate(dsn: str, settings: ApiSettings) -> list[int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await EventStore().evaluate(conn, settings.events, now=NOW)


async def test_threshold_and_silence_detected_once(client: httpx.AsyncClient, event_dsn: str, settings: ApiSettings) -> None:
    ids = await _evaluate(event_dsn, settings)
    again = await _evaluate(event_dsn, settings)
    assert ids and again == [], "re-evaluating the same data must not duplicate events"
    events = (await client.get("/v1/events", params={"after": 0})).json()
    loud = [e for e in events if e["event_type"] == "noise_threshold_exceeded"]
    silent = [e for e in events if e["event_type"] == "sensor_silent"]
    assert {e["sensor_id"] for e in loud} == {"se-jacquard"}
    assert {dt.datetime.fromisoformat(e["started_at"]) for e in loud} == expected_loud_windows(60.0)
    assert all(e["value"] > 60.0 and e["threshold"] == 60.0 and e["coverage"] == 1.0 for e in loud)
    assert all(e["coverage"] is None for e in silent)
    assert [e["sensor_id"] for e in silent] == ["se-fourneyron"]
    assert silent[0]["value"] == pytest.approx(25.1, abs=0.2)  # minutes since its last frame
    only_silent = (await client.get("/v1/events", params={"type": "sensor_silent"})).json()
    assert [e["id"] for e in only_silent] == [e["id"] for e in silent]


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    fail_first = 1

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
        else:
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    _Receiver.fail_first = 1
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


async def test_webhook_signed_retried_and_delivered(client: httpx.AsyncClient, event_dsn: str, settings: ApiSettings,
                                                    admin: dict, receiver: str) -> None:
    created = (await client.post("/v1/admin/webhooks", json={"url": receiver, "event_types": ["sensor_silent"]}, headers=admin)).json()
    await _evaluate(event_dsn, settings)
    store = WebhookStore()
    async with await psycopg.AsyncConnection.connect(event_dsn, autocommit=True) as conn, httpx.AsyncClient() as http:
        assert await store.dispatch_due(conn, http, settings.events) == 1   # receiver answers 503
        assert await store.dispatch_due(conn, http, settings.events) == 0   # backing off
        await asyncio.sleep(0.5)
        assert await store.dispatch_due(conn, http, settings.events) == 1   # retried, 204
    assert len(_Receiver.received) == 2
    headers, body = _Receiver.received[-1]
    event = json.loads(body)
    assert event["event_type"] == "sensor_silent" and event["sensor_id"] == "se-fourneyron" and event["coverage"] is None
    assert verify(created["secret"], body, headers[SIGNATURE_HEADER])
    assert not verify("another-secret", body, headers[SIGNATURE_HEADER])
    assert not verify(created["secret"], body.replace(b"fourneyron", b"jacquard"), headers[SIGNATURE_HEADER])
    ts = int(headers[SIGNATURE_HEADER].split(",")[0][2:])
    assert not verify(created["secret"], body, sign(created["secret"], body, ts - 3600)), "a replayed old signature is refused"
    status = (await client.get(f"/v1/admin/webhooks/{created['id']}/deliveries", headers=admin)).json()
    assert [(d["status"], d["attempts"], d["last_status"]) for d in status] == [("delivered", 2, 204)]


async def test_webhook_gives_up_after_max_attempts(client: httpx.AsyncClient, event_dsn: str, settings: ApiSettings,
                                                   admin: dict) -> None:
    from sonopolis.embedded import free_port

    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    created = (await client.post("/v1/admin/webhooks", json={"url": dead, "event_types": ["sensor_silent"]}, headers=admin)).json()
    await _evaluate(event_dsn, settings)
    async with await psycopg.AsyncConnection.connect(event_dsn, autocommit=True) as conn, httpx.AsyncClient() as http:
        for _ in range(settings.events.webhook_max_attempts):
            await conn.execute("UPDATE smart.api_webhook_deliveries SET next_attempt_at = now()")
            await WebhookStore().dispatch_due(conn, http, settings.events)
    status = (await client.get(f"/v1/admin/webhooks/{created['id']}/deliveries", headers=admin)).json()
    assert [(d["status"], d["attempts"]) for d in status] == [("failed", settings.events.webhook_max_attempts)]
    assert status[0]["last_error"] == "ConnectError"


async def test_sse_stream_delivers_events_and_resumes(event_dsn: str, settings: ApiSettings) -> None:
    async def read_events(base: str, n: int, headers: dict[str, str] | None = None, params: dict | None = None) -> list[dict]:
        got: list[dict] = []
        current: dict = {}
        async with httpx.AsyncClient(timeout=10) as http:
            async with http.stream("GET", base + "/v1/events/stream", headers=headers, params=params) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                async for line in r.aiter_lines():
                    if line.startswith(("id:", "event:", "data:")):
                        k, _, v = line.partition(":")
                        current[k] = v.strip()
                    elif not line and "data" in current:
                        got.append(current)
                        current = {}
                        if len(got) == n:
                            return got
        return got

    with running_api(settings, event_dsn) as base:
        reader = asyncio.create_task(read_events(base, 1, params={"type": "sensor_silent"}))
        await asyncio.sleep(0.5)   # the stream is open before the event exists
        await _evaluate(event_dsn, settings)
        first = await asyncio.wait_for(reader, 15)
        assert first[0]["event"] == "sensor_silent"
        assert json.loads(first[0]["data"])["sensor_id"] == "se-fourneyron"
        # resume: everything after id 0 (with Last-Event-ID) contains the loud windows too
        resumed = await asyncio.wait_for(read_events(base, len(expected_loud_windows(60.0)) + 1, headers={"Last-Event-ID": "0"}), 15)
        kinds = [e["event"] for e in resumed]
        assert kinds.count("noise_threshold_exceeded") == len(expected_loud_windows(60.0)) and "sensor_silent" in kinds
        assert [int(e["id"]) for e in resumed] == sorted(int(e["id"]) for e in resumed)


async def test_evaluations_take_turns_so_ids_become_visible_in_order(event_dsn: str, settings: ApiSettings) -> None:
    """A reader resumes with "id > last seen": an evaluation must not commit its ids while another one,
    holding lower ids, is still open (two replicas once let a reader skip an event for good)."""
    from api.events import _EVALUATION_LOCK

    holder = await psycopg.AsyncConnection.connect(event_dsn)
    await holder.execute("SELECT pg_advisory_xact_lock(%s)", (_EVALUATION_LOCK,))  # another replica mid-evaluation
    second = asyncio.create_task(_evaluate(event_dsn, settings))
    await asyncio.sleep(0.5)
    assert not second.done(), "an evaluation ran while another one held the turn"
    await holder.commit()
    await holder.close()
    ids = await asyncio.wait_for(second, 10)
    assert ids
    async with await psycopg.AsyncConnection.connect(event_dsn, autocommit=True) as conn:
        served = [e["id"] for e in await EventStore().after(conn, 0)]
    assert served == sorted(served) and set(ids) <= set(served)


async def test_webhook_body_is_the_event_as_the_api_and_sse_publish_it(client: httpx.AsyncClient, event_dsn: str,
                                                                        settings: ApiSettings, admin: dict, receiver: str) -> None:
    """docs/open-events.md: the same JSON is the SSE data and the webhook body. The webhook wrote started_at with
    Python's isoformat ('...+00:00') while /v1/events and SSE write pydantic's ('...Z'): a receiver matching the
    two by text saw two different events."""
    _Receiver.fail_first = 0
    await client.post("/v1/admin/webhooks", json={"url": receiver}, headers=admin)
    await _evaluate(event_dsn, settings)
    async with await psycopg.AsyncConnection.connect(event_dsn, autocommit=True) as conn, httpx.AsyncClient() as http:
        while await WebhookStore().dispatch_due(conn, http, settings.events):
            pass
    published = {e["id"]: e for e in (await client.get("/v1/events")).json()}
    delivered = {json.loads(body)["id"]: json.loads(body) for _, body in _Receiver.received}
    assert published and delivered.keys() == published.keys()
    for event_id, event in delivered.items():
        assert event == published[event_id], (event, published[event_id])
