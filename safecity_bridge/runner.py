"""Composition of the bridge process: service + console/feed server + retention, one loop.

``run_bridge`` is what ``sonopolis bridge`` calls; :class:`BridgeThread` runs the same
thing on a background thread for tests and the benchmark (real broker, real database,
real HTTP port), so they exercise exactly the production wiring.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from psycopg_pool import AsyncConnectionPool

from safecity_bridge import retention
from safecity_bridge.console.app import create_app
from safecity_bridge.console.auth import Authenticator
from safecity_bridge.retention import Clock, utc_now
from safecity_bridge.service import BridgeService, Steerer
from safecity_bridge.settings import SafeSettings

log = logging.getLogger(__name__)

BROKER_WAIT_S = 30.0


class NoCameras:
    """The steerer when no camera is configured: every alert says so."""

    async def steer(self, incident: Any) -> list[dict[str, Any]]:
        return []

    def camera_ids(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None


def map_data_for(settings: SafeSettings, service: BridgeService) -> Callable[[], dict[str, Any]]:
    def data() -> dict[str, Any]:
        cams = [{"camera_id": c.id, "name": c.name, "latitude": c.latitude, "longitude": c.longitude, "range_m": c.range_m} for c in settings.cameras]
        return {
            "sensors": [s.model_dump() for s in settings.sensors],
            "cameras": cams,
            "camera_status": list(service.camera_status.values()),
        }

    return data


@dataclass
class Bridge:
    """Everything the process runs; ``await run(stop)`` until ``stop`` is set."""

    settings: SafeSettings
    steerer: Steerer
    clock: Clock = utc_now
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    service: BridgeService | None = None
    server: uvicorn.Server | None = None

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
            self.service = service = BridgeService(s, self.steerer, http, clock=self.clock)
            warm = getattr(self.steerer, "start", None)
            if warm is not None:  # connect cameras and warm the ONVIF clients before the first alert
                for cid, reason in (await warm()).items():
                    service.camera_status[cid] = {"camera_id": cid, "status": "unavailable" if reason else "ok", "reason": reason, "at": None}
            await service.start()
            dsn = service.dsn
            pool = AsyncConnectionPool(dsn, min_size=1, max_size=s.db.pool_max, kwargs={"autocommit": True}, open=False)
            await pool.open()
            app = create_app(hub=service.hub, pool=pool, schema=service.schema, auth=Authenticator.from_settings(s.operators),
                             map_data=map_data_for(s, service), clock=self.clock)
            config = uvicorn.Config(app, host=s.http_host, port=s.http_port, log_level="warning", lifespan="off", access_log=False)
            self.server = server = uvicorn.Server(config)
            serve = asyncio.create_task(server.serve(), name="http")

            async def connect() -> Any:
                import psycopg

                return await psycopg.AsyncConnection.connect(dsn, autocommit=True)

            purge = asyncio.create_task(retention.run_periodically(connect, service.schema, s.retention_days, s.purge_interval_s, stop, clock=self.clock,
                                                                   purged_at_start=True), name="retention")
            try:
                while not server.started and not serve.done():
                    await asyncio.sleep(0.01)
                if serve.done():
                    serve.result()
                    raise RuntimeError(f"console server did not start on {s.http_host}:{s.http_port}")
                assert service.consumer is not None
                # The broker, or a stop (SIGTERM), whichever comes first: a stop during this wait
                # was ignored for 30 s, and a broker that never answered ended in a bare TimeoutError.
                connected = asyncio.create_task(service.consumer.connected.wait())
                stopping = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait({connected, stopping}, timeout=BROKER_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
                connected.cancel()
                stopping.cancel()
                if stopping in done:
                    return
                if connected not in done:
                    raise BrokerUnreachable(f"safe broker {s.mqtt.host}:{s.mqtt.port} did not accept the bridge within {BROKER_WAIT_S:.0f} s "
                                            "(address, port, TLS CA or credentials?)")
                self.ready.set()
                log.info("bridge ready: console http://%s:%d/ , safe broker %s:%d", s.http_host, s.http_port, s.mqtt.host, s.mqtt.port)
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({stopper, serve}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
            finally:
                stop.set()
                service.hub.close()
                server.should_exit = True
                await asyncio.gather(serve, purge, return_exceptions=True)
                await service.stop()
                await pool.close()
                close = getattr(self.steerer, "aclose", None)
                if close is not None:
                    await close()


class BrokerUnreachable(RuntimeError):
    """The safe broker did not accept the bridge's connection at start."""


class BridgeThread:
    """Run a :class:`Bridge` on its own thread and loop (tests, benchmark)."""

    def __init__(self, settings: SafeSettings, steerer_factory: Callable[[], Steerer], clock: Clock = utc_now):
        self.settings = settings
        self._factory = steerer_factory
        self._clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bridge: Bridge | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="bridge", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.bridge = Bridge(self.settings, self._factory(), clock=self._clock)
            task = asyncio.create_task(self.bridge.run(self._stop))
            ready = asyncio.create_task(self.bridge.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            self._ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to the test/bench thread by start()/stop()
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 60) -> "BridgeThread":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("bridge did not become ready")
        if self._error:
            raise self._error
        return self

    def call(self, coro: Any, timeout: float = 30) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def service(self) -> BridgeService:
        assert self.bridge is not None and self.bridge.service is not None
        return self.bridge.service

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._error and not isinstance(self._error, (asyncio.CancelledError, KeyboardInterrupt)):
            raise self._error

    def __enter__(self) -> "BridgeThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
