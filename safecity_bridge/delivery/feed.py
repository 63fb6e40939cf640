"""The live feed: every alert and update, pushed to each connected control-room client.

A :class:`FeedHub` fans messages out to subscriber queues without ever awaiting a
subscriber: ``publish`` is synchronous and O(subscribers). A subscriber whose queue is
full (a frozen browser tab) is disconnected and told why on reconnect, rather than
slowing the alert for everyone else. Served as Server-Sent Events by the console app.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_CLOSED = object()


@dataclass
class Subscription:
    id: int
    queue: asyncio.Queue[Any]
    dropped: bool = False

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self.queue.get()
            if item is _CLOSED:
                return
            yield item


@dataclass
class FeedHub:
    """Fan-out of feed messages; keeps the last ``replay`` messages for clients that (re)connect."""

    queue_size: int = 1000
    replay: int = 50
    _subs: dict[int, Subscription] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _recent: deque[dict[str, Any]] = field(default_factory=deque)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    published: int = 0
    dropped_subscribers: int = 0

    def subscribe(self, *, replay: bool = False) -> Subscription:
        sub = Subscription(next(self._ids), asyncio.Queue(maxsize=self.queue_size))
        if replay:
            for msg in list(self._recent)[-min(self.replay, self.queue_size - 1):]:
                sub.queue.put_nowait(msg)
        self._subs[sub.id] = sub
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.pop(sub.id, None)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> int:
        """Queue ``data`` for every subscriber now; return how many got it."""
        msg = {"seq": next(self._seq), "type": kind, **data}
        self._recent.append(msg)
        while len(self._recent) > self.replay:
            self._recent.popleft()
        delivered = 0
        for sub in list(self._subs.values()):
            try:
                sub.queue.put_nowait(msg)
                delivered += 1
            except asyncio.QueueFull:
                self._drop(sub)
        self.published += 1
        return delivered

    def _drop(self, sub: Subscription) -> None:
        log.warning("live feed subscriber %d too slow (%d queued): disconnected", sub.id, sub.queue.qsize())
        sub.dropped = True
        self._subs.pop(sub.id, None)
        self.dropped_subscribers += 1
        try:
            while True:
                sub.queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        sub.queue.put_nowait(_CLOSED)

    def close(self) -> None:
        for sub in list(self._subs.values()):
            self._subs.pop(sub.id, None)
            try:
                sub.queue.put_nowait(_CLOSED)
            except asyncio.QueueFull:
                sub.queue.get_nowait()
                sub.queue.put_nowait(_CLOSED)


def sse_encode(msg: dict[str, Any]) -> dict[str, str]:
    """The sse-starlette event for one feed message."""
    return {"event": str(msg["type"]), "id": str(msg["seq"]), "data": json.dumps(msg, default=str, separators=(",", ":"))}
