"""The broker double enforces the NGSI-LD HTTP rules the publisher must respect, and the CLI works against it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn

from simulators.ngsi_broker import BrokerTransport, NgsiBrokerDouble
from sonopolis.bootstrap import RoleDsns
from sonopolis.embedded import free_port
from tests.ngsi import seed

pytestmark = pytest.mark.anyio
UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
CTX = "https://bruit.example.fr/ngsi-ld/contexts/sonopolis.jsonld"
ENTITY = {"id": "urn:ngsi-ld:Device:x1", "type": "Device", "name": {"type": "Property", "value": "x"}}


async def test_content_types_and_link_rules() -> None:
    broker = NgsiBrokerDouble()
    async with httpx.AsyncClient(transport=BrokerTransport(broker), base_url="http://b") as http:
        r = await http.post(UPSERT, content=b"[]", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and r.json()["type"].endswith("/UnsupportedMediaType")
        r = await http.post(UPSERT, json=[{**ENTITY, "@context": [CTX]}],
                            headers={"Content-Type": "application/ld+json", "Link": f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"'})
        assert r.status_code == 400  # Link header with ld+json
        r = await http.post(UPSERT, json=[ENTITY], headers={"Content-Type": "application/ld+json"})
        assert r.status_code == 207 and "@context missing" in r.json()["errors"][0]["error"]["detail"]
        r = await http.post(UPSERT, json=[{**ENTITY, "@context": [CTX]}], headers={"Content-Type": "application/json"})
        assert r.status_code == 207  # @context in an application/json body
        r = await http.post(UPSERT, json=[ENTITY], headers={"Content-Type": "application/json",
                                                           "Link": f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'})
        assert r.status_code == 201 and r.json() == [ENTITY["id"]]
        assert broker.store()[ENTITY["id"]].context == CTX
        r = await http.post(UPSERT, json=[ENTITY], headers={"Content-Type": "application/json"})
        assert r.status_code == 204
        got = await http.get("/ngsi-ld/v1/entities", params={"type": "Device", "count": "true"})
        assert got.headers["NGSILD-Results-Count"] == "1" and "json-ld#context" in got.headers["link"]
        got = await http.get("/ngsi-ld/v1/entities", params={"type": "Device"}, headers={"NGSILD-Tenant": "nowhere"})
        assert got.status_code == 404 and got.json()["type"].endswith("/NonexistentTenant")
        r = await http.post(UPSERT, json=[{"id": "not a uri", "type": "Device"}], headers={"Content-Type": "application/json"})
        assert r.status_code == 207 and r.json()["errors"][0]["error"]["status"] == 400


def _serve(broker: NgsiBrokerDouble, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(broker, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("broker double did not start")
        time.sleep(0.02)
    return server


def test_cli_once_pushes_over_real_http_and_reports_outage(db: RoleDsns, tmp_path: Path) -> None:
    seed.migrate(db.smart)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1h", hour - timedelta(hours=6), timedelta(hours=1), 4)
        seed.add_lden(conn, date.today())
    broker = NgsiBrokerDouble(token="tok")
    port = free_port()
    server = _serve(broker, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOPOLIS_SMART_")}
    env.update({
        "SONOPOLIS_SMART_DB__DSN": db.smart,
        "SONOPOLIS_SMART_NGSI__BROKER_URL": f"http://127.0.0.1:{port}",
        "SONOPOLIS_SMART_NGSI__CONTEXT_URL": CTX,
        "SONOPOLIS_SMART_NGSI__TOKEN": "tok",
        "SONOPOLIS_SMART_NGSI__TENANT": "ville",
        "SONOPOLIS_SMART_NGSI__PERIODS": '["1h"]',
        "SONOPOLIS_SMART_NGSI__MAX_ATTEMPTS": "1",
    })
    cmd = [sys.executable, "-m", "sonopolis.cli", "ngsi-sync", "--once"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
        assert done.returncode == 0, done.stderr[-2000:]
        assert broker.count("ville", "NoiseLevelObserved") == 3 * 4 and broker.count("ville", "Device") == 3
        assert not any(status >= 400 for _, _, status in broker.requests)
        with psycopg.connect(db.smart) as conn:  # a new settled hour while the broker is down
            seed.add_aggregates(conn, "levels_1h", hour - timedelta(hours=2), timedelta(hours=1), 1)
        broker.outage = "unavailable"
        down = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
        assert down.returncode == 1 and "broker unavailable" in down.stderr
        broker.outage = None
        back = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
        assert back.returncode == 0 and broker.count("ville", "NoiseLevelObserved") == 3 * 5
    finally:
        server.should_exit = True
