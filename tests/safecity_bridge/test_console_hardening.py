"""The control-room console against what a hostile network or page can do.

Found by a review, each demonstrated against a running bridge before the fix: wrong
logins flooded the event loop's shared threads (a supervisor waited 19 s) and were
neither limited nor logged; a console that reconnected missed the alerts of the gap;
a dropped slow client was never told; the journal recorded holds that changed nothing;
blank, NUL or lone-surrogate hold reasons were accepted or answered 500; no response
kept the console out of frames or caches; a cross-site form could acknowledge.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
import uuid

import httpx
import psycopg
import pytest
from fastapi import HTTPException
from fastapi.security import HTTPBasicCredentials

from safecity_bridge.console import auth as console_auth
from safecity_bridge.console.app import PAGE
from safecity_bridge.console.auth import Authenticator
from safecity_bridge.delivery.feed import FeedHub
from tests.safecity_bridge.bridge_harness import FeedReader, Publisher, event
from tests.safecity_bridge.conftest import OPERATOR, SUPERVISOR


def _one_incident(base: str, broker_port: int, sensor: str) -> str:
    reader = FeedReader(f"{base}/feed", OPERATOR).start()
    pub = Publisher(broker_port)
    try:
        pub.publish(event(sensor))
        return reader.wait_for(lambda m: m["type"] == "incident")["incident"]["incident_id"]
    finally:
        pub.close()
        reader.stop()


def _creds(pair: tuple[str, str]) -> HTTPBasicCredentials:
    return HTTPBasicCredentials(username=pair[0], password=pair[1])


def test_wrong_logins_are_limited_per_address_and_logged(operators, caplog):
    auth = Authenticator({o.name: o for o in operators}, max_failures=3)

    async def attempt(pair: tuple[str, str], client: str) -> int:
        try:
            await auth.authenticate(_creds(pair), client)
            return 200
        except HTTPException as exc:
            return exc.status_code

    async def scenario() -> list[int]:
        codes = [await attempt((OPERATOR[0], f"guess {i} wrong"), "203.0.113.9") for i in range(4)]
        codes.append(await attempt(OPERATOR, "203.0.113.9"))  # even the right password: the address waits
        codes.append(await attempt(OPERATOR, "198.51.100.7"))  # another desk is not affected
        return codes

    assert asyncio.run(scenario()) == [401, 401, 401, 429, 429, 200]
    assert sum("console login failed for 'camille' from 203.0.113.9" in r.message for r in caplog.records) == 3


def test_a_login_flood_is_turned_away_without_queueing(operators):
    """Beyond the waiting line of argon2 checks the answer is an immediate 429, not a growing queue."""
    auth = Authenticator({o.name: o for o in operators}, max_failures=10_000)

    async def flood() -> list[int]:
        async def one(i: int) -> int:
            try:
                await auth.authenticate(_creds(("nobody", f"wrong {i}")), f"192.0.2.{i}")
                return 200
            except HTTPException as exc:
                return exc.status_code

        return await asyncio.gather(*(one(i) for i in range(40)))

    codes = asyncio.run(flood())
    assert codes.count(401) == console_auth.MAX_WAITING
    assert codes.count(429) == 40 - console_auth.MAX_WAITING


def test_every_response_keeps_the_console_out_of_frames_and_caches(bridge):
    base = f"http://127.0.0.1:{bridge.settings.http_port}"
    for path in ("/", "/api/incidents", "/api/journal", "/api/me"):
        r = httpx.get(base + path, auth=OPERATOR, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["cache-control"] == "no-store", path
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
    # The page's inline script runs under the policy: its hash is the one allowed.
    (script,) = re.findall(r"<script>(.*?)</script>", PAGE.read_text(encoding="utf-8"), flags=re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in httpx.get(base + "/", auth=OPERATOR).headers["content-security-policy"]


def test_a_page_on_another_site_cannot_act_with_the_operators_credentials(bridge, mqtt_broker):
    base = f"http://127.0.0.1:{bridge.settings.http_port}"
    incident = _one_incident(base, mqtt_broker.port, "s-east")
    ack = f"{base}/api/incidents/{incident}/ack"
    r = httpx.post(ack, auth=OPERATOR, headers={"Origin": "https://evil.example", "Content-Type": "text/plain"}, content=b"x")
    assert r.status_code == 403
    r = httpx.post(ack, auth=OPERATOR, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = httpx.post(ack, auth=OPERATOR, headers={"Origin": base})  # the console's own page
    assert r.status_code == 200


def test_holds_are_journaled_only_when_they_change_something(bridge, mqtt_broker, db):
    base = f"http://127.0.0.1:{bridge.settings.http_port}"
    incident = _one_incident(base, mqtt_broker.port, "s-west")
    hold = f"{base}/api/incidents/{incident}/hold"
    assert httpx.post(hold, json={"reason": "réquisition OPJ 2026-117"}, auth=SUPERVISOR).status_code == 200
    again = httpx.post(hold, json={"reason": "another reason, never stored"}, auth=SUPERVISOR)
    assert again.status_code == 409 and "already under a legal hold" in again.json()["detail"]
    for reason in ("     ", "a\u0000b"):
        assert httpx.post(hold, json={"reason": reason}, auth=SUPERVISOR).status_code == 422, repr(reason)
    surrogate = httpx.post(hold, content=b'{"reason": "abc\\ud800def"}', headers={"Content-Type": "application/json"}, auth=SUPERVISOR)
    assert surrogate.status_code == 422
    assert httpx.delete(f"{base}/api/incidents/{uuid.uuid4()}/hold", auth=SUPERVISOR).status_code == 404
    assert httpx.delete(hold, auth=SUPERVISOR).status_code == 200
    assert httpx.delete(hold, auth=SUPERVISOR).status_code == 404
    with psycopg.connect(db.safe) as conn:
        journal = conn.execute("SELECT action, details FROM safe.journal WHERE action LIKE 'legal_hold%%' ORDER BY id").fetchall()
    assert journal == [("legal_hold_placed", {"reason": "réquisition OPJ 2026-117"}), ("legal_hold_released", {})]


def test_a_reconnecting_console_gets_what_it_missed_or_a_resync():
    async def scenario() -> None:
        def seqs(hub: FeedHub, n: int) -> list[int]:
            probe = hub.subscribe()
            for i in range(n):
                hub.publish("incident", {"n": i})
            hub.unsubscribe(probe)
            return [probe.queue.get_nowait()["seq"] for _ in range(n)]

        old_ids = seqs(FeedHub(queue_size=10, replay=5), 5)  # the hub of a bridge that then restarted
        time.sleep(0.01)  # a restart takes longer than one microsecond per message published
        hub = FeedHub(queue_size=10, replay=5)
        first = seqs(hub, 3)[0]
        assert first > old_ids[-1]  # numbered above everything the stopped bridge gave
        back = hub.subscribe(after=first)  # saw the first, missed the next two
        assert [back.queue.get_nowait()["seq"] for _ in range(2)] == [first + 1, first + 2]
        for i in range(10):
            hub.publish("incident", {"n": i})  # the hub keeps the last 5
        late = hub.subscribe(after=first + 2)
        assert late.queue.get_nowait()["type"] == "resync"
        restarted = hub.subscribe(after=old_ids[-1])  # held an id of the stopped bridge: it missed all of this hub's
        assert restarted.queue.get_nowait()["type"] == "resync"
        ahead = hub.subscribe(after=first + 10**9)  # numbers this hub never gave
        assert ahead.queue.get_nowait()["type"] == "resync"
        slow = hub.subscribe()
        for i in range(12):
            hub.publish("incident", {"n": i})  # overflows a queue of 10: dropped, and told
        got = []
        async for msg in slow.messages():
            got.append(msg["type"])
        assert got == ["resync"] and hub.dropped_subscribers >= 1

    asyncio.run(scenario())


def test_the_console_page_runs_under_its_own_policy_in_chromium(bridge, tmp_path):
    """The CSP allows the page's inline script by hash and nothing else: a real browser must still run it.

    Chromium cannot answer a Basic challenge headless, so a small local proxy adds the
    operator's credentials (and answers the endless /feed with 204).
    """
    import shutil
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run scripts/ensure_test_packages.sh", pytrace=False)
    upstream = f"http://127.0.0.1:{bridge.settings.http_port}"

    class WithCredentials(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.startswith("/feed"):
                self.send_response(204)
                self.end_headers()
                return
            r = httpx.get(upstream + self.path, auth=OPERATOR, timeout=10)
            self.send_response(r.status_code)
            for k, v in r.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        def log_message(self, *args: object) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), WithCredentials)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
        dom = subprocess.run([exe, *flags, "--dump-dom", f"http://127.0.0.1:{proxy.server_address[1]}/"],
                             capture_output=True, text=True, timeout=120)
    finally:
        proxy.shutdown()
    assert re.findall(r'id="me"[^>]*>([^<]*)<', dom.stdout) == [f"{OPERATOR[0]} (operator)"], dom.stderr[-2000:]
