"""Cameras of the safe path: registry, selection, aiming and ONVIF PTZ control.

Public API for the bridge service (all safe-side; nothing here publishes anything)::

    from safecity_bridge.cameras import CameraConfig, PtzController, PtzSettings

    # start-up (inside the bridge's event loop), once:
    ptz = PtzController(settings.cameras, PtzSettings(), os.environ)  # resolves passwords now
    status = await ptz.start()        # {camera_id: None | reason}; warms WSDLs, opens sessions
    ...
    # per incident (never raises; one outcome per camera considered):
    outcomes = await ptz.steer(estimate)          # estimate: localisation.SourceEstimate
    for o in outcomes:                            # PtzOutcome
        o.camera_id, o.outcome                    # 'moved_preset' | 'moved_absolute' | 'replaced' | 'busy' | 'unavailable'
        o.reason, o.preset, o.pan, o.tilt, o.zoom, o.latency_ms, o.attempts
        o.to_record()                             # plain dict for the journal / feed
    ptz.camera_states()                           # connected?, breaker state, last error
    await ptz.status(camera_id)                   # (GetStatus position dict | None, reason | None)
    ...
    await ptz.close()                             # closes every ONVIF session

Building blocks, usable alone:

- :mod:`.config` — ``CameraConfig`` (endpoint, credentials via ``password_env`` /
  ``password_file``, position, mounting height, range, sector, ``PanTiltCalibration``,
  ``PresetConfig`` per sensor or place), ``CameraRegistry``, ``resolve_password``.
- :mod:`.selection` — ``select_cameras(cameras, lat, lon, n, exclude=...)`` ->
  ``CameraCandidate(camera, distance_m, bearing_deg)``, nearest first, in range and sector.
- :mod:`.aiming` — ``plan_aim(candidate, estimate)`` -> ``AimPlan`` (preset nearest the
  estimate, or AbsoluteMove pan/tilt/zoom when calibrated and the uncertainty is small);
  ``absolute_position`` for the geometry; ``CannotAim``.
- :mod:`.breaker` — ``CircuitBreaker`` (closed/open/half-open, injected clock).
- :mod:`.session` — ``open_session`` (onvif-zeep-async ``ONVIFCamera``), ``describe_failure``.
- :mod:`.ptz` — ``PtzController``, ``PtzSettings``, ``PtzOutcome``.

The ONVIF simulator used by tests, bench and demo is ``simulators.onvif_camera``.
"""

from safecity_bridge.cameras.aiming import AimPlan, CannotAim, plan_aim
from safecity_bridge.cameras.breaker import CircuitBreaker
from safecity_bridge.cameras.config import CameraConfig, CameraConfigError, CameraRegistry, PanTiltCalibration, PresetConfig, resolve_password
from safecity_bridge.cameras.ptz import PtzController, PtzOutcome, PtzSettings
from safecity_bridge.cameras.selection import CameraCandidate, select_cameras

__all__ = [
    "AimPlan",
    "CameraCandidate",
    "CameraConfig",
    "CameraConfigError",
    "CameraRegistry",
    "CannotAim",
    "CircuitBreaker",
    "PanTiltCalibration",
    "PresetConfig",
    "PtzController",
    "PtzOutcome",
    "PtzSettings",
    "plan_aim",
    "resolve_password",
    "select_cameras",
]
