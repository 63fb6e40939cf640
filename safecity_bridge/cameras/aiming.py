"""How to point one camera at an estimated source: a preset, or a computed pan/tilt/zoom.

Field localisation is good to ~25 m, and many cameras are not surveyed precisely. So
the default is the **preset** whose target point is nearest the estimate: presets are
set up by hand on the camera's own image, robust to estimate errors of tens of metres.
Only when the camera is **calibrated** (its pan zero bearing and tilt/zoom mapping are
surveyed) **and** the estimate is tight (``uncertainty_m`` at most
``absolute_max_uncertainty_m``) do we compute an ``AbsoluteMove`` from geometry:

- pan from the bearing camera -> source relative to the bearing at pan 0,
- tilt from the depression angle ``atan((mounting height - target height) / distance)``,
- zoom so the framed width is ``max(view_width_m, 2.2 * uncertainty)`` at the slant range.

A single-sensor estimate prefers the preset bound to that sensor. :class:`CannotAim`
says why a camera cannot be pointed (no preset and not calibrated, target outside the
pan range); the controller turns it into an "unavailable" outcome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from safecity_bridge.cameras.config import CameraConfig, PresetConfig
from safecity_bridge.cameras.selection import CameraCandidate
from safecity_bridge.geo import LocalFrame, angle_diff_deg
from safecity_bridge.localisation import SourceEstimate

DEFAULT_TARGET_HEIGHT_M = 1.0  # aim at a standing person's torso rather than the pavement


class CannotAim(Exception):
    """This camera cannot be pointed at this estimate; ``str()`` says why."""


@dataclass(frozen=True)
class AimPlan:
    camera_id: str
    kind: Literal["preset", "absolute"]
    distance_m: float
    preset_token: str | None = None
    preset_offset_m: float | None = None  # distance between the preset's target and the estimate
    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None
    why: str = ""


def absolute_position(camera: CameraConfig, distance_m: float, bearing_deg: float, uncertainty_m: float = 0.0, target_height_m: float = DEFAULT_TARGET_HEIGHT_M) -> tuple[float, float, float]:
    """Generic-space (pan, tilt, zoom) that frames a ground point seen at distance/bearing."""
    cal = camera.calibration
    half = cal.pan_range_deg / 2.0
    rel = angle_diff_deg(bearing_deg, cal.pan_zero_bearing_deg) * cal.pan_direction
    if abs(rel) > half + 1e-9:
        raise CannotAim(f"bearing {bearing_deg:.1f}° is {rel:+.1f}° from pan zero, outside the ±{half:.1f}° pan range")
    pan = max(-1.0, min(1.0, rel / half))

    drop = camera.mounting_height_m - target_height_m
    elevation = -math.degrees(math.atan2(drop, max(distance_m, 0.01)))
    tilt = -1.0 + 2.0 * (elevation - cal.tilt_min_deg) / (cal.tilt_max_deg - cal.tilt_min_deg)
    tilt = max(-1.0, min(1.0, tilt))  # too close to look that steeply: the head's limit is the best view

    slant = math.hypot(distance_m, drop)
    width = max(cal.view_width_m, 2.2 * uncertainty_m)
    hfov = 2.0 * math.atan(width / 2.0 / max(slant, 0.01))
    wide, tele = math.radians(cal.hfov_wide_deg) / 2.0, math.radians(cal.hfov_tele_deg) / 2.0
    factor = math.tan(wide) / math.tan(min(hfov / 2.0, wide))
    max_factor = math.tan(wide) / math.tan(tele)
    zoom = max(0.0, min(1.0, (factor - 1.0) / (max_factor - 1.0)))
    return pan, tilt, zoom


def choose_preset(camera: CameraConfig, estimate: SourceEstimate) -> tuple[PresetConfig, float]:
    """(preset, metres between its target and the estimate): the sensor's own preset for a
    single-sensor estimate, otherwise the preset whose target is nearest the estimate."""
    if not camera.presets:
        raise CannotAim(f"camera {camera.id} has no preset")
    frame = LocalFrame(estimate.lat, estimate.lon)

    def offset(p: PresetConfig) -> float:
        e, n = frame.to_en(p.latitude, p.longitude)
        return math.hypot(e, n)

    if estimate.method == "sensor" and estimate.sensor_ids:
        own = [p for p in camera.presets if p.sensor_id == estimate.sensor_ids[0]]
        if own:
            return own[0], offset(own[0])
    best = min(camera.presets, key=lambda p: (offset(p), p.token))
    return best, offset(best)


def plan_aim(candidate: CameraCandidate, estimate: SourceEstimate, *, absolute_max_uncertainty_m: float = 15.0, target_height_m: float = DEFAULT_TARGET_HEIGHT_M) -> AimPlan:
    """Decide GotoPreset vs AbsoluteMove for one selected camera (see module docstring)."""
    cam = candidate.camera
    calibrated = cam.calibration.calibrated
    absolute_error: CannotAim | None = None
    if calibrated and estimate.uncertainty_m <= absolute_max_uncertainty_m:
        try:
            pan, tilt, zoom = absolute_position(cam, candidate.distance_m, candidate.bearing_deg, estimate.uncertainty_m, target_height_m)
            return AimPlan(cam.id, "absolute", candidate.distance_m, pan=pan, tilt=tilt, zoom=zoom, why=f"calibrated and uncertainty {estimate.uncertainty_m:.0f} m <= {absolute_max_uncertainty_m:.0f} m")
        except CannotAim as exc:
            absolute_error = exc
    if cam.presets:
        preset, off = choose_preset(cam, estimate)
        why = "nearest preset" if absolute_error is None else f"nearest preset ({absolute_error})"
        return AimPlan(cam.id, "preset", candidate.distance_m, preset_token=preset.token, preset_offset_m=off, why=why)
    if absolute_error is not None:
        raise absolute_error
    if calibrated:
        # Loose estimate, no preset: a wide computed view is still better than not moving.
        pan, tilt, zoom = absolute_position(cam, candidate.distance_m, candidate.bearing_deg, estimate.uncertainty_m, target_height_m)
        return AimPlan(cam.id, "absolute", candidate.distance_m, pan=pan, tilt=tilt, zoom=zoom, why="no preset: wide computed view")
    raise CannotAim(f"camera {cam.id} has no preset and is not calibrated")
