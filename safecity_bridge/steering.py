"""The service's camera seam: an incident in, one outcome per camera out.

Wraps :class:`safecity_bridge.cameras.PtzController` (ONVIF sessions kept warm, a lock,
timeouts, retries and a circuit breaker per camera) behind the service's ``Steerer``
protocol, so the service never sees ONVIF and tests of the pipeline can run with
:class:`safecity_bridge.runner.NoCameras` when no camera is configured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from safecity_bridge.cameras import PtzController
from safecity_bridge.correlation import IncidentState
from safecity_bridge.settings import SafeSettings

log = logging.getLogger(__name__)


class OnvifSteerer:
    """Steers the configured cameras; call :meth:`start` once inside the bridge's loop."""

    def __init__(self, settings: SafeSettings, environ: Mapping[str, str] | None = None):
        self._ptz = PtzController(settings.cameras, settings.ptz, os.environ if environ is None else environ)
        self._started = False

    async def start(self) -> dict[str, str | None]:
        status = await self._ptz.start()
        self._started = True
        for cid, reason in status.items():
            if reason:
                log.warning("camera %s not reachable at start-up: %s", cid, reason)
        return status

    async def steer(self, incident: IncidentState) -> list[dict[str, Any]]:
        if not self._started:
            await self.start()
        outcomes = await self._ptz.steer(incident.estimate)
        return [o.to_record() for o in outcomes]

    def camera_ids(self) -> list[str]:
        return self._ptz.camera_ids()

    def camera_states(self) -> list[dict[str, Any]]:
        return self._ptz.camera_states()

    async def aclose(self) -> None:
        await self._ptz.close()
