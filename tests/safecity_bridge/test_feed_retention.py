"""The live feed's replay buffer keeps no alert longer than the retention.

The safe path is quiet: its last 50 messages can be weeks old. The hub kept them in
memory for good and replayed them to every client that connected with ``replay``
(the feed's default), after the purge had deleted those incidents from the database.
"""

from __future__ import annotations

import asyncio

import httpx

from safecity_bridge.delivery.feed import FeedHub
from safecity_bridge.runner import NoCameras
from safecity_bridge.service import BridgeService
from safecity_bridge.settings import SafeSettings
from tests.safecity_bridge.bridge_harness import DECLARATION, SENSORS

DAY = 86_400.0


def _queued(sub) -> list[dict]:  # noqa: ANN001
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out


def test_replay_forgets_messages_older_than_the_retention():
    async def run() -> tuple[list[dict], list[dict], list[dict]]:
        now = [1_000.0]
        hub = FeedHub(queue_size=100, replay=50, max_age_s=15 * DAY, clock=lambda: now[0])
        hub.publish("incident", {"incident": {"incident_id": "old"}})
        last_old = hub._next_seq - 1
        now[0] += 16 * DAY
        hub.publish("incident", {"incident": {"incident_id": "new"}})
        fresh = _queued(hub.subscribe(replay=True))
        now[0] += 1
        reconnect = _queued(hub.subscribe(after=last_old - 1))  # a client that saw nothing since before the old one
        now[0] += 15 * DAY
        later = _queued(hub.subscribe(replay=True))
        return fresh, reconnect, later

    fresh, reconnect, later = asyncio.run(run())
    assert [m["incident"]["incident_id"] for m in fresh] == ["new"]
    assert [m["type"] for m in reconnect] == ["resync"], "what it missed is gone: it reloads from the database"
    assert later == []


def test_the_bridge_hub_keeps_messages_no_longer_than_its_retention():
    settings = SafeSettings(declaration=DECLARATION, db={"dsn": "postgresql://x@127.0.0.1/none"}, sensors=SENSORS, retention_days=7)
    service = BridgeService(settings, NoCameras(), httpx.AsyncClient())
    assert service.hub.max_age_s == 7 * DAY
