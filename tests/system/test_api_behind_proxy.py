"""``sonopolis api`` behind the deployed Caddy: the proxy's X-Forwarded-* count, nobody else's.

Real processes end to end: the API started by its own command with the settings compose
gives it (``SONOPOLIS_SMART_API__TRUSTED_PROXIES`` naming the proxy's address only),
on real PostgreSQL, behind Caddy run from ``deploy/caddy/Caddyfile``. In compose the
proxy is another container; here a relay gives its connections their own loopback
address (127.0.0.5), so loopback being trusted by default cannot make the test pass.
Clients bind other loopback addresses (127.0.0.2-4) so the rate limiter shows whose
address it counted.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest

from ngsi.context import parse_link_header
from sonopolis.bootstrap import RoleDsns
from sonopolis.embedded import ServiceError, free_port, terminate, wait_port
from tests.ngsi import seed
from tests.system.deployed_proxy import PeerRelay, deployed_proxy

PROXY_IP = "127.0.0.5"
T0 = datetime(2024, 6, 10, tzinfo=timezone.utc)
SERIES = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1M"
TEMPORAL = {"id": SERIES, "timerel": "between", "timeAt": "2024-06-10T00:00:00Z", "endTimeAt": "2024-06-10T00:05:00Z"}
CONTEXT_PATH = "/ngsi-ld/contexts/sonopolis.jsonld"
BURST = 4


@pytest.fixture
def api_process(db: RoleDsns, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``sonopolis api`` on a free port over a seeded smart schema; yields (port, its log file)."""
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1min", T0, timedelta(minutes=1), 10)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOPOLIS_") and k != "FORWARDED_ALLOW_IPS"}
    env |= {
        "SONOPOLIS_SMART_DB__DSN": db.smart,
        "SONOPOLIS_SMART_API__TRUST_FORWARDED_FOR": "true",
        "SONOPOLIS_SMART_API__TRUSTED_PROXIES": f'["{PROXY_IP}"]',  # the form docker-compose.yml uses
        "SONOPOLIS_SMART_API__RATE_LIMIT_PER_MINUTE": "1",
        "SONOPOLIS_SMART_API__RATE_LIMIT_BURST": str(BURST),
        "SONOPOLIS_SMART_API__EXPORTS__DIRECTORY": str(tmp_path / "opendata"),
        "SONOPOLIS_SMART_API__EVENTS__RUN_IN_API": "false",
        "SONOPOLIS_SMART_NGSI__DAY_DOCUMENTS_KEEP_DAYS": "0",
    }
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "sonopolis.cli", "api", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_port("127.0.0.1", port, 60, "sonopolis api")
        except ServiceError as exc:
            pytest.fail(f"{exc}: {log_path.read_text(errors='replace')[-3000:]}", pytrace=False)
        yield port, log_path
    finally:
        terminate(proc)


def client(local_address: str, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """An HTTP client whose connections come from ``local_address`` (a loopback address)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=local_address, verify=verify), timeout=20)


def test_context_links_are_https_through_the_proxy_and_forged_headers_count_for_nothing(
        api_process: tuple[int, Path], tmp_path: Path) -> None:
    api_port, api_log = api_process
    relay = PeerRelay(("127.0.0.1", api_port), PROXY_IP)
    try:
        with deployed_proxy(tmp_path / "caddy", {"api:8080": f"127.0.0.1:{relay.port}"}) as proxy:
            tls = ssl.create_default_context(cafile=str(proxy.root_ca))
            public_context = proxy.https_url + CONTEXT_PATH
            temporal = proxy.https_url + "/ngsi-ld/v1/temporal/entities"

            with client("127.0.0.3", tls) as resident:
                r = resident.get(temporal, params=TEMPORAL)
                assert r.status_code == 200, (r.text, proxy.log_text()[-2000:])
                assert parse_link_header(r.headers["link"]) == public_context
                assert [i["observedAt"] for i in r.json()[0]["LAeq"]][:1] == ["2024-06-10T00:00:00Z"]
                # Caddy writes X-Forwarded-* itself: what a client sends it is not passed on
                r = resident.get(temporal, params=TEMPORAL, headers={
                    "Accept": "application/ld+json", "X-Forwarded-Proto": "http", "X-Forwarded-For": "198.51.100.1"})
                assert r.status_code == 200 and r.json()[0]["@context"] == [public_context]
                # the published @context URL answers, through the proxy
                ctx = resident.get(public_context)
                assert ctx.status_code == 200 and ctx.headers["content-type"].startswith("application/ld+json")
                assert resident.get(temporal, params=TEMPORAL).status_code == 200
                limited = resident.get(temporal, params=TEMPORAL)
                assert limited.status_code == 429, "the resident's own address is counted"
            # Another resident through the same proxy has its own bucket: the proxy's
            # X-Forwarded-For is believed (were it not, both would share the proxy's address).
            with client("127.0.0.4", tls) as other:
                assert other.get(temporal, params=TEMPORAL).status_code == 200

            # A peer that is not the proxy (reaching the api directly) cannot choose its scheme or address.
            direct = f"http://127.0.0.1:{api_port}"
            with client("127.0.0.2") as bypass:
                codes = []
                for i in range(BURST + 1):
                    r = bypass.get(direct + "/ngsi-ld/v1/temporal/entities", params=TEMPORAL, headers={
                        "X-Forwarded-Proto": "https", "X-Forwarded-For": f"203.0.113.{i}", "Host": "bruit.example.org"})
                    codes.append(r.status_code)
                    if r.status_code == 200:
                        assert parse_link_header(r.headers["link"]) == "http://bruit.example.org" + CONTEXT_PATH
            assert codes == [200] * BURST + [429], "a forged X-Forwarded-For is not a new client"
    finally:
        relay.close()
    # Behind the proxy the api keeps no access log: it would name each resident's address
    # (the proxy logs requests without them, deploy/caddy/Caddyfile).
    logged = api_log.read_text(errors="replace")
    assert not [ip for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4") if ip in logged], logged[-2000:]
