"""PtzController: turn the best cameras toward an incident, never failing the alert.

For each incident the controller selects cameras (in range, in sector, nearest first,
skipping cameras whose breaker is open), plans each move (preset or absolute, see
:mod:`aiming`) and sends them concurrently. Per camera:

- one command at a time (an ``asyncio.Lock``): a camera is a single physical head;
- a hard timeout per attempt and a total budget per steer (``asyncio.timeout``), so a
  hung camera costs at most ``total_budget_s``; a move whose budget ran out while it
  waited for the lock never reached the camera: reported "busy", neither a camera
  failure (breaker untouched) nor "unavailable" (the head answers, it was occupied); a
  queued move that a newer one for the same camera replaces is skipped (the newest
  target wins, the head's time is not spent on stale ones) and reported "replaced":
  the camera did nothing wrong, so it is neither a failure nor "unavailable";
- a small retry budget, only for failures a retry can fix (timeouts, connection
  errors), never for refused credentials or a SOAP fault;
- a circuit breaker: after ``breaker_failures`` consecutive failures the camera is
  skipped (reported "unavailable: circuit open") until a half-open trial succeeds;
- the ONVIF session is opened at start-up and reused; it is reopened on the next call
  after a connection failure, and closed explicitly by :meth:`close`.

:meth:`steer` never raises: it returns one :class:`PtzOutcome` per camera considered,
``moved_preset`` / ``moved_absolute`` / ``replaced`` (a newer move went instead) /
``busy`` (not sent: the head was occupied for the whole budget) / ``unavailable`` with
the reason and latency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from safecity_bridge.cameras.aiming import AimPlan, CannotAim, plan_aim
from safecity_bridge.cameras.breaker import CircuitBreaker
from safecity_bridge.cameras.config import CameraConfig, resolve_password
from safecity_bridge.cameras.selection import CameraCandidate, select_cameras
from safecity_bridge.cameras.session import CameraSession, describe_failure, expected_errors, open_session, warm_wsdls
from safecity_bridge.localisation import SourceEstimate

log = logging.getLogger(__name__)
T = TypeVar("T")
OutcomeKind = Literal["moved_preset", "moved_absolute", "replaced", "busy", "unavailable"]
REPLACED = "replaced by a newer command to this camera before it was sent"
BUSY = "camera busy with earlier commands"
"""Start of the reason of a call whose budget ran out while it waited for the camera's lock."""


class PtzSettings(BaseModel):
    """Timeouts, retries, breaker and aiming thresholds of the controller."""

    model_config = ConfigDict(extra="forbid")

    connect_timeout_s: float = Field(5.0, gt=0, le=60, description="Start-up connection of one camera (WSDL, discovery, profiles, presets)")
    command_timeout_s: float = Field(0.5, gt=0, le=30, description="Hard timeout of one attempt (reconnect + command)")
    total_budget_s: float = Field(1.2, gt=0, le=60, description="Everything for one camera in one steer, lock wait and retries included")
    retries: int = Field(1, ge=0, le=5, description="Extra attempts after a timeout or connection error")
    retry_backoff_s: float = Field(0.05, ge=0, le=5)
    breaker_failures: int = Field(3, ge=1, le=100, description="Consecutive failures that open the breaker")
    breaker_cooldown_s: float = Field(30.0, ge=0, le=3600, description="Open time before a half-open trial")
    max_cameras: int = Field(2, ge=1, le=10, description="Cameras steered per incident")
    absolute_max_uncertainty_m: float = Field(15.0, ge=0, le=500, description="Above this, calibrated cameras use presets too")
    target_height_m: float = Field(1.0, ge=0, le=20)


class PtzOutcome(BaseModel):
    """What happened to one camera for one incident (journaled, shown in the console)."""

    camera_id: str
    outcome: OutcomeKind
    reason: str | None = None
    preset: str | None = None
    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None
    distance_m: float | None = None
    latency_ms: float = 0.0
    attempts: int = 0

    def to_record(self) -> dict[str, Any]:
        return self.model_dump()


class _Failed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PtzController:
    """Owns one session, lock and breaker per camera. Use inside the bridge's event loop."""

    def __init__(self, cameras: Sequence[CameraConfig], settings: PtzSettings, environ: Mapping[str, str], *, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._cameras = {c.id: c for c in cameras}
        self._passwords: dict[str, SecretStr] = {c.id: resolve_password(c, environ) for c in cameras}
        self._sessions: dict[str, CameraSession] = {}
        self._locks = {c.id: asyncio.Lock() for c in cameras}
        self._latest = {c.id: 0 for c in cameras}  # number of the newest move asked of each camera
        self._breakers = {c.id: CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s, clock) for c in cameras}
        self._expected: tuple[type[BaseException], ...] = expected_errors()  # imports onvif: at start-up, not import time

    def camera_ids(self) -> list[str]:
        return list(self._cameras)

    async def start(self) -> dict[str, str | None]:
        """Warm the WSDLs and connect every enabled camera concurrently.

        Returns camera_id -> None (connected) or the failure reason. A camera that is
        down now is retried on its next steer (under its breaker); start never raises.
        """
        await warm_wsdls()
        ids = [cid for cid, c in self._cameras.items() if c.enabled]
        results = await asyncio.gather(*(self._run(cid, lambda s: _noop(), self.settings.connect_timeout_s, self.settings.connect_timeout_s, retries=0) for cid in ids))
        status = {cid: reason for cid, (_, reason, _) in zip(ids, results)}
        log.info("ptz: %d/%d camera(s) connected", sum(r is None for r in status.values()), len(ids))
        return status

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()

    def camera_states(self) -> list[dict[str, Any]]:
        """Per camera: connected?, breaker state, last error (for the console)."""
        out = []
        for cid, b in self._breakers.items():
            s = self._sessions.get(cid)
            out.append({"camera_id": cid, "connected": s is not None, "breaker": b.state, "consecutive_failures": b.consecutive_failures,
                        "retry_in_s": round(b.retry_in_s(), 1), "last_error": b.last_error, "missing_presets": list(s.missing_presets) if s else []})
        return out

    async def steer(self, estimate: SourceEstimate, *, max_cameras: int | None = None, exclude: Collection[str] = ()) -> list[PtzOutcome]:
        """Point up to ``max_cameras`` cameras at the estimate. Never raises."""
        started = time.perf_counter()
        n = max_cameras or self.settings.max_cameras
        ordered = select_cameras(list(self._cameras.values()), estimate.lat, estimate.lon, n=len(self._cameras) or 1, exclude=exclude)
        outcomes: list[PtzOutcome] = []
        chosen: list[tuple[CameraCandidate, AimPlan]] = []
        for cand in ordered:
            if len(chosen) == n:
                break
            b = self._breakers[cand.camera.id]
            if b.state == "open":
                outcomes.append(PtzOutcome(camera_id=cand.camera.id, outcome="unavailable", distance_m=cand.distance_m,
                                           reason=f"circuit open after {b.consecutive_failures} failure(s) ({b.last_error}); retry in {b.retry_in_s():.0f} s"))
                continue
            # A camera that cannot aim here (no preset near, not calibrated) is reported and
            # does not take a slot: it once did, and the next camera in range was never tried.
            try:
                plan = plan_aim(cand, estimate, absolute_max_uncertainty_m=self.settings.absolute_max_uncertainty_m,
                                target_height_m=self.settings.target_height_m)
            except CannotAim as exc:
                outcomes.append(PtzOutcome(camera_id=cand.camera.id, outcome="unavailable", reason=str(exc), distance_m=cand.distance_m))
                continue
            chosen.append((cand, plan))
        outcomes += await asyncio.gather(*(self._steer_one(c, plan, started) for c, plan in chosen))
        return outcomes

    async def status(self, camera_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """GetStatus of one camera: (position dict, None) or (None, reason)."""
        value, reason, _ = await self._run(camera_id, lambda s: s.get_status(), self.settings.command_timeout_s, self.settings.total_budget_s, self.settings.retries)
        return value, reason

    async def _steer_one(self, cand: CameraCandidate, plan: AimPlan, started: float) -> PtzOutcome:
        cam = cand.camera
        self._latest[cam.id] += 1
        mine = self._latest[cam.id]
        _, reason, attempts = await self._run(cam.id, lambda s: _send(s, plan), self.settings.command_timeout_s, self.settings.total_budget_s, self.settings.retries,
                                              replaced=lambda: self._latest[cam.id] != mine)
        latency_ms = (time.perf_counter() - started) * 1000.0
        common = {"camera_id": cam.id, "distance_m": round(cand.distance_m, 1), "latency_ms": round(latency_ms, 2), "attempts": attempts}
        if reason == REPLACED:
            log.info("ptz: camera %s: a queued move was replaced by a newer one before it was sent", cam.id)
            return PtzOutcome(outcome="replaced", reason=reason, **common)
        if attempts == 0 and reason is not None and reason.startswith(BUSY):
            # Never sent: the head was working on earlier moves. Reported as what it is, since
            # "unavailable" had the journal and the console call a working camera down.
            log.info("ptz: camera %s: a move was not sent: %s", cam.id, reason)
            return PtzOutcome(outcome="busy", reason=reason, **common)
        if reason is not None:
            log.warning("ptz: camera %s unavailable after %d attempt(s): %s", cam.id, attempts, reason)
            return PtzOutcome(outcome="unavailable", reason=reason, **common)
        if plan.kind == "preset":
            return PtzOutcome(outcome="moved_preset", preset=plan.preset_token, **common)
        return PtzOutcome(outcome="moved_absolute", pan=plan.pan, tilt=plan.tilt, zoom=plan.zoom, **common)

    async def _run(self, camera_id: str, op: Callable[[CameraSession], Awaitable[T]], attempt_timeout: float, budget: float, retries: int,
                   *, replaced: Callable[[], bool] | None = None) -> tuple[T | None, str | None, int]:
        """Run ``op`` on the camera's session under lock, timeouts, retries and breaker.

        ``replaced``: asked once the lock is held; True when a newer move was asked of this
        camera meanwhile, which then goes instead (a head can only look one way, and the
        queue once spent the budget of the newest, most precise move on older ones).

        Returns (result, None, attempts) or (None, reason, attempts); never raises for a
        camera failure. An unexpected exception (a bug, not a camera fault) is logged
        with its traceback and reported as unavailable, because the alert path must go on.
        """
        breaker = self._breakers[camera_id]
        if breaker.state == "open":
            return None, f"circuit open ({breaker.last_error}); retry in {breaker.retry_in_s():.0f} s", 0
        attempts = 0
        holding = False
        try:
            async with asyncio.timeout(budget):
                async with self._locks[camera_id]:
                    holding = True
                    if replaced is not None and replaced():
                        return None, REPLACED, 0
                    # Asked under the lock: a half-open trial is then one that really goes out.
                    if not breaker.allow():
                        return None, f"circuit open ({breaker.last_error}); retry in {breaker.retry_in_s():.0f} s", 0
                    while True:
                        attempts += 1
                        try:
                            async with asyncio.timeout(attempt_timeout):
                                session = self._sessions.get(camera_id) or await self._connect(camera_id)
                                result = await op(session)
                            break
                        except self._expected as exc:
                            reason, retryable = describe_failure(exc, attempt_timeout)
                            if not isinstance(exc, TimeoutError):
                                await self._drop(camera_id)  # reconnect (and rediscover) next time
                            if not retryable or attempts > retries:
                                raise _Failed(reason) from exc
                            await asyncio.sleep(self.settings.retry_backoff_s)
        except _Failed as f:
            breaker.record_failure(f.reason)
            return None, f.reason, attempts
        except TimeoutError:
            if not holding:
                # Never reached the camera: it was busy with earlier commands (a burst of
                # incidents). Counted as a failure, this opened the breaker of a camera
                # answering every command; the command holding the lock counts its own.
                return None, f"{BUSY} for the whole {budget * 1000:.0f} ms budget", 0
            reason = f"no answer within the {budget * 1000:.0f} ms budget"
            breaker.record_failure(reason)
            return None, reason, attempts
        except Exception as exc:  # noqa: BLE001 - last resort on the alert path, logged with traceback
            log.exception("ptz: unexpected error on camera %s", camera_id)
            reason = f"internal error: {type(exc).__name__}"
            breaker.record_failure(reason)
            return None, reason, attempts
        breaker.record_success()
        return result, None, attempts

    async def _connect(self, camera_id: str) -> CameraSession:
        session = await open_session(self._cameras[camera_id], self._passwords[camera_id])
        self._sessions[camera_id] = session
        return session

    async def _drop(self, camera_id: str) -> None:
        session = self._sessions.pop(camera_id, None)
        if session is not None:
            try:
                await session.close()
            except self._expected as exc:  # closing a broken connection may fail too; nothing to save
                log.debug("ptz: closing session of %s: %s", camera_id, exc)


async def _send(session: CameraSession, plan: AimPlan) -> None:
    if plan.kind == "preset":
        assert plan.preset_token is not None
        await session.goto_preset(plan.preset_token)
    else:
        assert plan.pan is not None and plan.tilt is not None and plan.zoom is not None
        await session.absolute_move(plan.pan, plan.tilt, plan.zoom)


async def _noop() -> None:
    return None
