"""HMAC-SHA256-signed webhooks for video-management systems.

Each delivery carries three headers::

    X-Sonopolis-Delivery:  <uuid>            same on every retry and every re-sending of
                                            the same alert, also after a restart
                                            (receiver de-duplicates)
    X-Sonopolis-Timestamp: <unix seconds>    fresh on every attempt
    X-Sonopolis-Signature: v1=<hex>          HMAC-SHA256(secret, "<timestamp>." + body)

A receiver recomputes the MAC with :func:`verify` and rejects timestamps outside its
replay window (default 300 s). Deliveries go through a bounded queue and are retried
with capped exponential backoff in the background: a slow or dead VMS never delays the
alert on the live feed nor the camera. A delivery that finally fails is reported to
``on_failure`` (journaled by the service), never dropped silently.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from common.backoff import Backoff
from safecity_bridge.settings import WebhookTarget

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Sonopolis-Signature"
TIMESTAMP_HEADER = "X-Sonopolis-Timestamp"
DELIVERY_HEADER = "X-Sonopolis-Delivery"
DEFAULT_TOLERANCE_S = 300
DELIVERY_NAMESPACE = uuid.UUID("6f1c2b4e-3d5a-4c8e-9b7f-0a2e5d8c1f43")


def delivery_id_for(target_name: str, incident_id: str, event_id: str) -> str:
    """The delivery id of one alert (an incident as of one event) to one target.

    Derived, not random: a restarted bridge re-sends an alert whose mark it never
    wrote (recovery is at least once), and the receiver can only recognise that copy
    if it carries the id of the first sending. A random id made it a new delivery.
    """
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"{target_name}/{incident_id}/{event_id}"))


class WebhookSignatureError(ValueError):
    """The signature is missing, malformed, wrong, or its timestamp is outside the replay window."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def signed_headers(secret: str, body: bytes, delivery_id: str, *, now: float | None = None) -> dict[str, str]:
    ts = int(now if now is not None else time.time())
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body), DELIVERY_HEADER: delivery_id}


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, *, now: float | None = None, tolerance_s: int = DEFAULT_TOLERANCE_S) -> None:
    """Raise :class:`WebhookSignatureError` unless ``signature`` is valid and fresh (constant-time compare)."""
    if not timestamp or not signature:
        raise WebhookSignatureError("missing timestamp or signature header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise WebhookSignatureError(f"timestamp {timestamp[:20]!r} is not an integer") from None
    current = now if now is not None else time.time()
    if abs(current - ts) > tolerance_s:
        raise WebhookSignatureError(f"timestamp outside the replay window ({int(current - ts)} s old, tolerance {tolerance_s} s)")
    if not hmac.compare_digest(sign(secret, ts, body), signature):
        raise WebhookSignatureError("signature does not match")


@dataclass(frozen=True)
class Delivery:
    target: WebhookTarget
    body: bytes
    content_type: str
    incident_id: str
    delivery_id: str = field(default_factory=lambda: str(uuid.uuid4()))


FailureHook = Callable[[Delivery, str], Awaitable[None]]


@dataclass
class WebhookSender:
    """Background delivery with retries; ``submit`` never waits."""

    client: httpx.AsyncClient
    queue_size: int = 10_000
    concurrency: int = 8
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    on_failure: FailureHook | None = None
    delivered: int = 0
    failed: int = 0
    _queue: asyncio.Queue[Delivery] = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_size)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"webhook-{i}") for i in range(self.concurrency)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, delivery: Delivery) -> bool:
        try:
            self._queue.put_nowait(delivery)
            return True
        except asyncio.QueueFull:
            self.failed += 1
            log.error("webhook queue full (%d): delivery %s of incident %s to %s not queued", self.queue_size, delivery.delivery_id, delivery.incident_id, delivery.target.name)
            if self.on_failure:
                asyncio.get_running_loop().create_task(self.on_failure(delivery, "queue full"))
            return False

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued delivery has been attempted to the end (tests, shutdown)."""
        await asyncio.wait_for(self._queue.join(), timeout)

    async def _worker(self) -> None:
        while True:
            d = await self._queue.get()
            try:
                await self._deliver(d)
            finally:
                self._queue.task_done()

    async def _deliver(self, d: Delivery) -> None:
        backoff = Backoff(initial=self.backoff_initial_s, maximum=self.backoff_max_s)
        secret = d.target.secret.get_secret_value()
        last = ""
        for attempt in range(1, d.target.max_attempts + 1):
            headers = {"Content-Type": d.content_type, **signed_headers(secret, d.body, d.delivery_id)}
            try:
                resp = await self.client.post(d.target.url, content=d.body, headers=headers, timeout=d.target.timeout_s)
                if resp.status_code < 300:
                    self.delivered += 1
                    return
                last = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    break  # the receiver refuses this delivery: retrying will not help
            except httpx.HTTPError as exc:
                last = f"{exc.__class__.__name__}"
            if attempt < d.target.max_attempts:
                await asyncio.sleep(backoff.next_delay())
        self.failed += 1
        log.warning("webhook %s of incident %s to %s failed after retries: %s", d.delivery_id, d.incident_id, d.target.name, last)
        if self.on_failure:
            await self.on_failure(d, last)
