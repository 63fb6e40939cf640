"""The live feed: every alert and update, pushed to each connected control-room client.

A :class:`FeedHub` fans messages out to subscriber queues without ever awaiting a
subscriber: ``publish`` is synchronous and O(subscribers). A subscriber whose queue is
full (a frozen browser tab) gets a last ``resync`` message and is disconnected, rather
than slowing the alert for everyone else. Served as Server-Sent Events by the console app.

Every message carries a sequence number (the SSE ``id``). A browser that reconnects
sends the last one it saw (``Last-Event-ID``) and gets every later message the hub
still holds; when the gap is older than that, or the client was dropped, it gets
``resync`` and reloads the incidents. Without this, an alert published while a
console was reconnecting never reached it until someone reloaded the page.

Held messages older than ``max_age_s`` (the bridge passes its retention) are forgotten:
the safe path is quiet, its last messages can be weeks old, and they were replayed to
every new client after the purge had deleted their incidents from the database.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_CLOSED = object()


def _first_seq() -> int:
    """Microseconds since the epoch: a restarted bridge numbers above every id its predecessor gave.

    Numbering from 1 made a console that reconnected after a restart, holding id 5,
    take the new hub's messages 6, 7... as all it had missed, and lose 1 to 5.
    """
    return time.time_ns() // 1000


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
    max_age_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    _subs: dict[int, Subscription] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _recent: deque[dict[str, Any]] = field(default_factory=deque)
    _stamps: deque[float] = field(default_factory=deque)  # clock() at publication, one per _recent
    _next_seq: int = field(default_factory=_first_seq)
    published: int = 0
    dropped_subscribers: int = 0

    def subscribe(self, *, replay: bool = False, after: int | None = None) -> Subscription:
        """``after``: the last sequence number the client saw (a reconnect); it takes precedence over ``replay``."""
        sub = Subscription(next(self._ids), asyncio.Queue(maxsize=self.queue_size))
        keep = min(self.replay, self.queue_size - 2)
        self._forget_expired()
        if after is not None:
            missed = [m for m in self._recent if m["seq"] > after]
            oldest_kept = self._recent[0]["seq"] if self._recent else self._next_seq
            # A gap older than the hub keeps, or numbers this hub never gave (a clock stepped
            # back across a restart): the client reloads.
            if oldest_kept > after + 1 or len(missed) > keep or after >= self._next_seq:
                sub.queue.put_nowait(self._resync("missed", after))
            else:
                for msg in missed:
                    sub.queue.put_nowait(msg)
        elif replay:
            for msg in list(self._recent)[-keep:]:
                sub.queue.put_nowait(msg)
        self._subs[sub.id] = sub
        return sub

    def _forget_expired(self) -> None:
        """Drop held messages older than ``max_age_s``: past retention, their incidents are gone."""
        if self.max_age_s is None:
            return
        horizon = self.clock() - self.max_age_s
        while self._stamps and self._stamps[0] < horizon:
            self._stamps.popleft()
            self._recent.popleft()

    def _resync(self, reason: str, after: int | None = None) -> dict[str, Any]:
        """Tells a client to reload the incidents: messages it should have had are gone."""
        return {"seq": self._next_seq - 1, "type": "resync", "reason": reason, "after": after}

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.pop(sub.id, None)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, kind: str, data: dict[str, Any]) -> int:
        """Queue ``data`` for every subscriber now; return how many got it."""
        msg = {"seq": self._next_seq, "type": kind, **data}
        self._next_seq += 1
        self._recent.append(msg)
        self._stamps.append(self.clock())
        while len(self._recent) > self.replay:
            self._recent.popleft()
            self._stamps.popleft()
        self._forget_expired()
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
        sub.queue.put_nowait(self._resync("too slow"))  # it was never told before
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
