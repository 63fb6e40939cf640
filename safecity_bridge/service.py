"""The bridge process: safe broker in, cameras and control room out.

Hot path for one event (one asyncio task, in order)::

    MQTT (paho thread) -> intake checks -> correlate (plan) -> ONE SQL statement
    (event + incident + journal, committed) -> PUBACK -> live feed (synchronous fan-out)
    -> camera steering task (concurrent) -> webhooks queued (background)

Commit first: an alert the operator sees always exists in the journal, and a crash
before the commit leaves the message unacknowledged for the broker to re-deliver. The
commit is a single round trip, the feed push never awaits a client, the ONVIF clients
are kept warm by the controller, and steering runs concurrently with the next event:
a dead camera costs its own timeout, never the alert, which then says "camera
unavailable". What follows the alert (camera outcomes, delivery journal) is written by
a second connection so it never queues in front of the next incident.

Refuses to exist without a complete legal declaration (:class:`DeclarationMissing`),
and journals the declaration at every start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import psycopg

from common.backoff import Backoff
from common.postgres import UNAVAILABLE
from safecity_bridge import journal, recovery, retention, store
from safecity_bridge.consumer import Inbound, SafeConsumer
from safecity_bridge.correlation import Correlator, IncidentState, Plan
from safecity_bridge.delivery.feed import FeedHub
from safecity_bridge.delivery.webhooks import Delivery, WebhookSender, delivery_id_for
from safecity_bridge.intake import RateLimiter, RecentIds, Rejected, parse
from safecity_bridge.journal import SYSTEM, Action
from safecity_bridge.onvif_events import metadata_stream
from safecity_bridge.retention import Clock, utc_now
from safecity_bridge.settings import SafeSettings

log = logging.getLogger(__name__)

RECOVERY_BATCH = 200


class DeclarationMissing(RuntimeError):
    """No complete legal declaration: the bridge does not steer cameras nor deliver alerts."""


SideWrite = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
"""A write after the alert (journal, camera outcomes), run by the side writer."""


class Steerer(Protocol):
    """Turns cameras toward an incident; never raises, one outcome dict per camera tried.

    Outcome keys: camera_id, outcome ('moved_preset' | 'moved_absolute' | 'replaced' | 'busy' | 'unavailable'),
    preset, pan, tilt, zoom, reason, latency_ms.
    """

    async def steer(self, incident: IncidentState) -> list[dict[str, Any]]: ...

    def camera_ids(self) -> list[str]: ...


_CAMERA_MESSAGES = {"unavailable": "camera unavailable", "replaced": "replaced by a newer move to this camera",
                    "busy": "not sent: camera busy with earlier moves"}
_NOT_SENT = frozenset({"replaced", "busy"})
"""Outcomes of moves that never reached the camera: they say nothing of its health."""


def require_declaration(settings: SafeSettings) -> None:
    decl = settings.declaration
    if not decl.complete:
        raise DeclarationMissing(
            "the safe path is disabled: no complete legal declaration. Coupling sound detection with "
            "video-protection cameras requires a specific legal basis in France (CNIL warning to "
            "Saint-Etienne 2019; TA Orleans 12 July 2024, n°2104478). Missing: " + "; ".join(decl.missing())
        )
    if decl.fictitious:
        off_loopback = [c.id for c in settings.cameras if not _is_loopback(c.host)]
        if off_loopback:
            raise DeclarationMissing("the fictitious demo declaration only allows simulated cameras on this machine (127.0.0.1/localhost)")
        # Cameras are not the only way out: with none configured, the demo declaration read a
        # city's broker and alerted its VMS and control room. Every way in and out stays here.
        elsewhere = [f"webhook {w.name} ({urlsplit(w.url).hostname})" for w in settings.webhooks if not _is_loopback(urlsplit(w.url).hostname or "")]
        if not _is_loopback(settings.mqtt.host):
            elsewhere.append(f"safe broker ({settings.mqtt.host})")
        if not _is_loopback(settings.http_host):
            elsewhere.append(f"console (http_host {settings.http_host})")
        if elsewhere:
            raise DeclarationMissing("the fictitious demo declaration delivers alerts on this machine only (127.0.0.1/localhost); "
                                     "off this machine: " + ", ".join(elsewhere))


def _is_loopback(host: str) -> bool:
    """An address of this machine: "localhost" or a loopback IP (a name like "127.cams.example.org" is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Stats:
    received: int = 0
    incidents: int = 0
    correlated: int = 0
    duplicates: int = 0
    quarantined: int = 0
    db_retries: int = 0


@dataclass
class BridgeService:
    settings: SafeSettings
    steerer: Steerer
    http_client: httpx.AsyncClient
    clock: Clock = utc_now
    hub: FeedHub = field(init=False)
    stats: Stats = field(default_factory=Stats)
    camera_status: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_declaration(self.settings)
        if self.settings.db.dsn is None:
            raise DeclarationMissing("db.dsn (SONOPOLIS_SAFE_DB__DSN) is required: the journal is mandatory")
        self.schema = self.settings.db.schema_name
        self.dsn = self.settings.db.dsn.get_secret_value()
        self.hub = FeedHub(queue_size=self.settings.feed_queue_size, max_age_s=self.settings.retention_days * 86_400.0)
        self.correlator = Correlator(self.settings.correlation, {s.sensor_id: s for s in self.settings.sensors})
        self.limiter = RateLimiter(self.settings.rate_limit)
        self.recent = RecentIds(self.settings.dedup_memory)
        self.webhooks = WebhookSender(self.http_client, queue_size=self.settings.webhook_queue_size, on_failure=self._webhook_failed)
        self.camera_status = {cid: {"camera_id": cid, "status": "unknown", "reason": None, "at": None} for cid in self.steerer.camera_ids()}
        # Unbounded as a queue, bounded by the consumer: it hands over a message only while it
        # holds fewer than buffer_max_messages unfinished ones (safecity_bridge.inflight).
        self._inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self._side: asyncio.Queue[tuple[str, SideWrite]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hot: psycopg.AsyncConnection[Any] | None = None
        self.consumer: SafeConsumer | None = None

    # ------------------------------------------------------------------ life cycle
    async def connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)

    async def start(self) -> None:
        """Migrate, journal the declaration, purge what is past retention, alert what a stopped
        bridge owed, then start consuming (call inside the loop)."""
        await asyncio.to_thread(store.migrate, self.dsn, self.schema)
        self._hot = await self.connect()
        decl = self.settings.declaration
        await journal.append(
            self._hot, self.schema, at=self.clock(), actor=SYSTEM, action=Action.BRIDGE_STARTED,
            details={"legal_basis": decl.legal_basis, "dpia_reference": decl.dpia_reference, "declared_by": decl.declared_by,
                     "fictitious": decl.fictitious, "cameras": len(self.settings.cameras), "sensors": len(self.settings.sensors),
                     "retention_days": self.settings.retention_days},
        )
        if decl.fictitious:
            log.warning("FICTITIOUS legal declaration (demo): simulated cameras only")
        # What is past retention goes before anything is alerted again: a bridge stopped for
        # longer than the retention once delivered what it still owed, then purged it.
        await retention.purge(self._hot, self.schema, self.settings.retention_days, clock=self.clock)
        self.webhooks.start()
        self._spawn(self._side_writer(), "side-writer")
        await self._recover()
        self._spawn(self._worker(), "intake")
        self.consumer = SafeConsumer(self.settings.mqtt, asyncio.get_running_loop(), self._inbox.put_nowait,
                                     buffer_max=self.settings.buffer_max_messages)
        self.consumer.start()

    async def stop(self) -> None:
        if self.consumer:
            self.consumer.stop()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.webhooks.stop()
        self.hub.close()
        if self._hot:
            await self._hot.close()

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _recover(self) -> None:
        """Alert what a stopped bridge committed but never alerted (see :mod:`safecity_bridge.recovery`).

        Runs before the first message is consumed, batch by batch: each batch's marks are
        written before the next is read, so nothing is alerted twice by this loop.
        """
        alerted: set[uuid.UUID] = set()  # a write the database refuses leaves its incident unmarked: once is enough
        while True:
            owed = await self._db(lambda c: store.unalerted(c, self.schema, limit=RECOVERY_BATCH))
            fresh = [(row, evs) for row, evs in owed if row["incident_id"] not in alerted]
            if not fresh:
                break
            now, mono = self.clock(), self.correlator.monotonic()
            for row, events in fresh:
                plan = recovery.owed_plan(row, events, self.correlator.sensors, now=now, now_mono=mono)
                self.correlator.commit(plan)
                alerted.add(row["incident_id"])
                age_s = (now - recovery.newest_onset(events)).total_seconds()
                self._alert(plan, recovery.owed_event_ids(events), late_s=age_s if age_s > self.settings.steer_max_age_s else None, recovered=True)
            await self._side.join()
        self.correlator.prune()
        if alerted:
            log.warning("%d incident(s) were committed by a bridge that stopped before alerting them: alerted now, as recovered", len(alerted))

    # ------------------------------------------------------------------ hot path
    async def _worker(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                await self.handle(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one message must not end the intake (it once did, for good)
                log.exception("intake failed on a message from %r; quarantining it", item.topic[:200])
                await self._quarantine_unhandled(item, exc)

    async def _quarantine_unhandled(self, item: Inbound, exc: Exception) -> None:
        """Keep the message with the error as its reason; if even that fails, log it and let it go.

        Acking a message that could not be stored loses it, but leaving it unacked makes
        the broker deliver it first after every restart, stopping the bridge each time.
        """
        rej = Rejected("internal_error", f"{type(exc).__name__}: {str(exc)[:500]}")
        try:
            await self._quarantine(item, rej, self.clock())
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("could not quarantine a message from %r either; acknowledged without a trace in the database", item.topic[:200])
            self._ack(item)

    async def _db(self, op: Callable[[psycopg.AsyncConnection[Any]], Awaitable[Any]]) -> Any:
        """Run ``op`` on the hot connection; ride out an outage (the message stays unacked meanwhile)."""
        backoff = Backoff(initial=0.05, maximum=5.0)
        while True:
            try:
                if self._hot is None or self._hot.closed:
                    self._hot = await self.connect()
                return await op(self._hot)
            except UNAVAILABLE as exc:
                self.stats.db_retries += 1
                delay = backoff.next_delay()
                log.warning("safe database unavailable (%s): retry in %.2f s", exc.__class__.__name__, delay)
                if self._hot is not None:
                    await self._hot.close()
                self._hot = None
                await asyncio.sleep(delay)

    async def handle(self, item: Inbound) -> None:
        self.stats.received += 1
        received_at = self.clock()
        try:
            ev = parse(item.topic, item.payload, set(self.correlator.sensors), received_at)
            if ev.event_id in self.recent:
                self.stats.duplicates += 1
                self._ack(item)
                return
            self.limiter.check(ev)
        except Rejected as rej:
            await self._quarantine(item, rej, received_at)
            return
        plan = self.correlator.plan(ev, received_at)
        attempts = 0

        async def record(c: psycopg.AsyncConnection[Any]) -> bool:
            nonlocal attempts
            attempts += 1
            return await store.record_event(c, self.schema, ev, plan.incident, is_new=plan.is_new, received_at=received_at)

        stored = await self._db(record)
        if not stored and attempts > 1:
            # "Already there" after a retry may be our own first attempt: it committed, then
            # the connection dropped before the reply. Counted as a duplicate, its alert was
            # lost (no live alert, no camera) while the incident sat in the database. It is
            # ours when the stored event belongs to the incident this plan wrote.
            owner = await self._db(lambda c: store.incident_of_event(c, self.schema, ev.event_id))
            stored = owner == plan.incident.incident_id
        self.recent.add(ev.event_id)
        self._ack(item)
        if not stored:
            self.stats.duplicates += 1
            return
        late_s = (received_at - ev.onset).total_seconds()
        try:
            self.correlator.commit(plan)
            self.correlator.prune()
            self._alert(plan, [ev.event_id], late_s=late_s if late_s > self.settings.steer_max_age_s else None)
        except Exception:  # noqa: BLE001 - the event is stored and acked: the worker's quarantine is not for it
            # Left to the worker, the stored event would also be quarantined as an
            # internal_error. Its alert mark stays unset, so the next start's sweep alerts it.
            log.exception("event %s is stored but its alert failed; the bridge's next start alerts it", ev.event_id)

    def _ack(self, item: Inbound) -> None:
        if self.consumer is not None:
            self.consumer.ack(item)

    async def _quarantine(self, item: Inbound, rej: Rejected, received_at: datetime) -> None:
        self.stats.quarantined += 1
        log.info("quarantined a message (%s) from sensor %s", rej.code, rej.sensor_id)
        await self._db(lambda c: store.quarantine(c, self.schema, received_at=received_at, topic=item.topic, payload=item.payload,
                                                  reason_code=rej.code, reason=rej.reason, sensor_id=rej.sensor_id, event_id=rej.event_id))
        self._ack(item)

    def _alert(self, plan: Plan, event_ids: list[uuid.UUID], *, late_s: float | None = None, recovered: bool = False) -> None:
        """Live alert, webhooks and cameras, then the events' alert marks.

        ``late_s``: the sound is that old, too old to aim at. ``recovered``: a stopped
        bridge owed this alert (:meth:`_recover`).
        """
        inc = store.incident_dict(plan.incident)
        steer = (plan.is_new or plan.reaim) and late_s is None
        if plan.is_new:
            self.stats.incidents += 1
        else:
            self.stats.correlated += 1
        if steer:
            self._spawn(self._steer(plan.incident), "steer")
        elif late_s is not None:
            log.warning("event %s is %.0f s old: alerted as late, no camera moved", event_ids[-1], late_s)
        kind = "incident" if plan.is_new else "incident_update"
        body: dict[str, Any] = {"incident": inc, "event_id": str(event_ids[-1]), "cameras": "steering" if steer else "unchanged"}
        if late_s is not None:
            body["late_s"] = round(late_s)
        if recovered:
            body["recovered"] = True
        n = self.hub.publish(kind, body)
        if plan.is_new or plan.reaim:
            self._submit_webhooks(inc, event_ids[-1])
        details: dict[str, Any] = {"feed_clients": n, "kind": kind, **({"recovered": True} if recovered else {})}
        self.side_write(f"alert_delivered of incident {plan.incident.incident_id}",
                        lambda c: store.alert_delivered(c, self.schema, at=self.clock(), incident_id=plan.incident.incident_id,
                                                        event_ids=event_ids, details=details))

    async def _steer(self, inc: IncidentState) -> None:
        started = time.monotonic()
        outcomes = await self.steerer.steer(inc)
        at = self.clock()
        for o in outcomes:
            if o["outcome"] in _NOT_SENT:
                continue  # never sent: says nothing of the camera, which the moves it did receive report on
            ok = o["outcome"] != "unavailable"
            self.camera_status[o["camera_id"]] = {"camera_id": o["camera_id"], "status": "ok" if ok else "unavailable", "reason": o.get("reason"), "at": at.isoformat()}
        summary = [{**o, "message": _CAMERA_MESSAGES.get(o["outcome"], o["outcome"])} for o in outcomes]
        self.hub.publish("cameras", {"incident_id": str(inc.incident_id), "cameras": summary,
                                     "message": "no camera in range" if not outcomes else None,
                                     "elapsed_ms": round((time.monotonic() - started) * 1000, 1)})
        self.side_write(f"camera outcomes of incident {inc.incident_id}",
                        lambda c: store.record_camera_outcomes(c, self.schema, inc.incident_id, outcomes, at))

    def _submit_webhooks(self, inc: dict[str, Any], event_id: uuid.UUID) -> None:
        """One delivery per target, its id derived from the alert (the same when recovery sends it again)."""
        for target in self.settings.webhooks:
            if target.format == "onvif":
                body, ctype = metadata_stream([inc]), "application/xml"
            else:
                body, ctype = json.dumps({"type": "incident", "incident": inc}, separators=(",", ":")).encode(), "application/json"
            self.webhooks.submit(Delivery(target, body, ctype, inc["incident_id"], delivery_id_for(target.name, inc["incident_id"], str(event_id))))

    async def _webhook_failed(self, d: Delivery, why: str) -> None:
        self.side_write(f"webhook_failed of incident {d.incident_id} to {d.target.name}",
                        lambda c: journal.append(c, self.schema, at=self.clock(), actor=SYSTEM, action=Action.WEBHOOK_FAILED,
                                                 incident_id=uuid.UUID(d.incident_id), details={"target": d.target.name, "delivery_id": d.delivery_id, "error": why}))

    def side_write(self, what: str, op: SideWrite) -> None:
        """Queue ``op`` for the side writer; ``what`` names it in the log should the database refuse it."""
        self._side.put_nowait((what, op))

    async def _side_writer(self) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        backoff = Backoff(initial=0.1, maximum=5.0)
        while True:
            what, op = await self._side.get()
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await self.connect()
                    await op(conn)
                    backoff.reset()
                    break
                except UNAVAILABLE as exc:
                    log.warning("side writer: database unavailable (%s), retrying", exc.__class__.__name__)
                    conn = None
                    await asyncio.sleep(backoff.next_delay())
                except psycopg.Error:
                    # A write the database refuses would be refused again: dropped with its
                    # error in the log, so the writes queued behind it still happen.
                    log.exception("side writer: %s was refused; skipped", what)
                    break
            self._side.task_done()

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until the inbox and the side writes are done (tests, graceful stop)."""
        deadline = time.monotonic() + timeout
        while self._inbox.qsize() or any(t.get_name() == "steer" for t in self._tasks):
            if time.monotonic() > deadline:
                raise TimeoutError("bridge did not settle")
            await asyncio.sleep(0.01)
        await asyncio.wait_for(self._side.join(), max(0.1, deadline - time.monotonic()))
