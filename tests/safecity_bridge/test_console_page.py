"""The control-room page itself, in a real browser, against a running bridge.

Debian's chromium, headless, driven over the DevTools protocol on a pipe (no extra
package): the operator logs in by answering the Basic challenge like the browser's
login dialog would, then the page keeps the credentials, as it does for a real operator.
The feed is the bridge's real one; the incidents come from the real broker and database.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.safecity_bridge.bridge_harness import SENSORS, event
from tests.safecity_bridge.conftest import OPERATOR

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,900"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run scripts/ensure_test_packages.sh (apt-get install -y chromium)", pytrace=False)
    return exe


class Browser:
    """One headless chromium and its first tab, over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, profile: Path, login: tuple[str, str]) -> None:
        self.login = login
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        # Above 9 so that the redirections below cannot collide with fds 3 and 4.
        hi_r, hi_w = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_r)
        os.close(from_w)
        launch = f'exec "$0" "$@" 3<&{hi_r} 4>&{hi_w} {hi_r}<&- {hi_w}>&-'  # bash: dash refuses fds above 9
        self.proc = subprocess.Popen(["bash", "-c", launch, _chromium(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                      "about:blank"], pass_fds=(hi_r, hi_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(hi_r)
        os.close(hi_w)
        self._ids = iter(range(1, 1 << 31))
        self._write = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._cv = threading.Condition()
        self.on_request: Callable[[dict[str, Any]], dict[str, Any] | None] = lambda params: None
        threading.Thread(target=self._read, daemon=True).start()
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]

    def _post(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> int:
        msg: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        with self._write:
            os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        return msg["id"]

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        mid = self._post(method, params, session=hasattr(self, "session"))
        with self._cv:
            if not self._cv.wait_for(lambda: mid in self._replies, timeout):
                raise TimeoutError(f"chromium did not answer {method}")
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self._from_r, 1 << 16):
            *msgs, buf = (buf + chunk).split(b"\0")
            for raw in msgs:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cv:
                        self._replies[msg["id"]] = msg
                        self._cv.notify_all()
                elif msg.get("method") == "Fetch.authRequired":  # the login dialog, answered
                    user, password = self.login
                    self._post("Fetch.continueWithAuth", {"requestId": msg["params"]["requestId"], "authChallengeResponse": {
                        "response": "ProvideCredentials", "username": user, "password": password}})
                elif msg.get("method") == "Fetch.requestPaused":
                    answer = self.on_request(msg["params"])
                    if answer is None:
                        self._post("Fetch.continueRequest", {"requestId": msg["params"]["requestId"]})
                    else:
                        self._post(answer.pop("method"), {"requestId": msg["params"]["requestId"], **answer})

    def open_logged_in(self, url: str) -> None:
        """Navigate, answering the Basic challenge once; then the browser's own credential cache takes over."""
        self.send("Fetch.enable", {"handleAuthRequests": True})
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_for(lambda s: s["me"] != "" and s["status"] != "connexion…", "the page logged in and connected")
        self.send("Fetch.disable")

    def state(self) -> dict[str, Any]:
        expr = """JSON.stringify({me: document.getElementById("me")?.textContent ?? "",
                   status: document.getElementById("status")?.textContent ?? "",
                   incidents: [...document.querySelectorAll("#list .inc > div:first-child")].map(d => d.textContent)})"""
        res = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})["result"]
        return json.loads(res["value"])

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            s = self.state()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; the page shows {s}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            self._post("Browser.close", session=False)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self._to_w)


@pytest.fixture
def browser(tmp_path: Path):  # noqa: ANN201
    b = Browser(tmp_path / "profile", OPERATOR)
    yield b
    b.close()


def _insert_incident(dsn: str, event_class: str, sensor_id: str, at: datetime | None = None) -> uuid.UUID:
    """An incident the live feed never carried: only a reload of the list can show it."""
    s = next(p for p in SENSORS if p.sensor_id == sensor_id)
    incident_id, now = uuid.uuid4(), at or datetime.now(timezone.utc)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO safe.incidents (incident_id, opened_at, first_onset, event_class, sensor_ids, confidence, latitude, longitude,"
                     " uncertainty_m, locate_method) VALUES (%s, %s, %s, %s, %s, 0.9, %s, %s, 150, 'sensor')",
                     (incident_id, now, now, event_class, [sensor_id], s.latitude, s.longitude))
    return incident_id


LIVE, BROKEN = "flux en direct connecté", "flux interrompu, reconnexion…"


def test_the_page_reloads_the_incidents_when_its_feed_reconnects(bridge, pub, db, browser):
    """What changed while the feed was down and that the feed will not replay reaches the operator at the reconnection.

    Such a change is an incident of a restarted bridge, whose new feed numbers its
    messages again from 1 (a console that saw up to 7 gets only those after 7), or one
    older than the feed keeps. Here it is written straight to the database, so that the
    page's reload is the only way it can appear.
    """
    base = f"http://127.0.0.1:{bridge.settings.http_port}"
    browser.open_logged_in(base + "/")
    browser.wait_for(lambda s: s["status"] == LIVE and s["me"] == f"{OPERATOR[0]} (operator)", "the logged-in page with its live feed")
    pub.publish(event("s-north", "gunshot"))
    browser.wait_for(lambda s: len(s["incidents"]) == 1 and s["incidents"][0].startswith("gunshot"), "the alert on the page")

    bridge.loop.call_soon_threadsafe(bridge.service.hub.close)  # the server ends every feed stream
    browser.wait_for(lambda s: s["status"] == BROKEN, "the page noticing its feed dropped")
    _insert_incident(db.safe, "explosion", "s-south")
    # The browser waits ~3 s before reconnecting an EventSource: nothing can show it yet.
    assert not any(i.startswith("explosion") for i in browser.state()["incidents"])

    shown = browser.wait_for(lambda s: any(i.startswith("explosion") for i in s["incidents"]), "the incident created while the feed was down")
    assert shown["status"] == LIVE and len(shown["incidents"]) == 2 and "s-south" in shown["incidents"][0]
    assert bridge.service.hub.subscribers == 1  # the page's new subscription, on the same hub


def test_the_page_reconnects_its_feed_after_a_retry_answered_with_an_http_error(bridge, pub, db, browser):
    """A browser retries a dropped EventSource by itself only while the retries fail at the network level.

    A retry answered with an HTTP error closes it for good: the TLS terminator the
    deployment puts in front of the console answers 502 while the bridge restarts, and the
    console itself answers 429 to an address locked out by wrong logins, or while a flood of
    them fills its waiting line. The page then said "reconnexion…" for ever and showed no
    new alert until someone reloaded it. Here the first retry gets a 502, the next ones
    reach the bridge.
    """
    base = f"http://127.0.0.1:{bridge.settings.http_port}"
    browser.open_logged_in(base + "/")
    browser.wait_for(lambda s: s["status"] == LIVE, "the logged-in page with its live feed")
    answered: list[int] = []

    def gateway(request: dict[str, Any]) -> dict[str, Any] | None:
        if answered:
            return None  # on to the bridge
        answered.append(502)
        return {"method": "Fetch.fulfillRequest", "responseCode": 502, "responseHeaders": [{"name": "Content-Type", "value": "text/html"}],
                "body": base64.b64encode(b"<h1>502 Bad Gateway</h1>").decode()}

    browser.on_request = gateway
    browser.send("Fetch.enable", {"patterns": [{"urlPattern": "*/feed*"}]})
    bridge.loop.call_soon_threadsafe(bridge.service.hub.close)
    browser.wait_for(lambda s: s["status"] == BROKEN, "the page noticing its feed dropped")
    _insert_incident(db.safe, "explosion", "s-south")

    shown = browser.wait_for(lambda s: any(i.startswith("explosion") for i in s["incidents"]), "the page back on its feed after the 502")
    assert answered == [502] and shown["status"] == LIVE
    pub.publish(event("s-east", "glass_break"))  # and the feed it is back on is live
    browser.wait_for(lambda s: any(i.startswith("glass_break") for i in s["incidents"]), "an alert on the reopened feed")


def test_an_incident_of_another_day_shows_its_date_not_only_its_time(bridge, db, browser):
    """The list holds the whole retention (15 days by default): with its time only, an
    incident of three days ago (or one recovered after an outage) read as one of today.
    One of another day shows its date with its time; one of today its time only."""
    old_at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3, hours=2)
    _insert_incident(db.safe, "explosion", "s-south", at=old_at)
    _insert_incident(db.safe, "gunshot", "s-north")
    browser.open_logged_in(f"http://127.0.0.1:{bridge.settings.http_port}/")
    shown = browser.wait_for(lambda s: len(s["incidents"]) == 2, "both incidents listed")
    old_iso, today_iso = old_at.isoformat(), datetime.now(timezone.utc).isoformat()
    expect = browser.send("Runtime.evaluate", {"returnByValue": True, "expression": f"""JSON.stringify({{
        old_date: new Date("{old_iso}").toLocaleDateString(), old_time: new Date("{old_iso}").toLocaleTimeString(),
        today_date: new Date("{today_iso}").toLocaleDateString()}})"""})["result"]["value"]
    expect = json.loads(expect)
    [old] = [i for i in shown["incidents"] if i.startswith("explosion")]
    [today] = [i for i in shown["incidents"] if i.startswith("gunshot")]
    assert expect["old_date"] in old and expect["old_time"] in old, (old, expect)
    assert expect["today_date"] not in today and expect["old_date"] not in today, (today, expect)
