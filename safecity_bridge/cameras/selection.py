"""Which cameras can see an incident: in range, in their sector, nearest first.

Distance and bearing are measured from each camera to the estimated source in a local
tangent plane (exact at city scale). Selection is pure and cheap, so the service may
call it for every incident; the caller may exclude cameras it knows are unavailable
(e.g. an open circuit breaker) so the next-best camera is tried instead.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from safecity_bridge.cameras.config import CameraConfig
from safecity_bridge.geo import LocalFrame, bearing_in_sector, enu_bearing_deg


@dataclass(frozen=True)
class CameraCandidate:
    """A camera that can see the point, with the geometry the aimer needs."""

    camera: CameraConfig
    distance_m: float  # horizontal, camera -> source
    bearing_deg: float  # camera -> source, clockwise from north


def camera_view(camera: CameraConfig, lat: float, lon: float) -> tuple[float, float]:
    """(horizontal distance m, bearing deg) from the camera to a ground point."""
    e, n = LocalFrame(camera.latitude, camera.longitude).to_en(lat, lon)
    return math.hypot(e, n), enu_bearing_deg(e, n)


def sees(camera: CameraConfig, distance_m: float, bearing_deg: float) -> bool:
    """In range and in the bearing sector (a full circle when min == max or 0..360)."""
    if distance_m > camera.range_m:
        return False
    if camera.full_circle or distance_m < 1e-6:
        return True
    return bearing_in_sector(bearing_deg, camera.sector_min_bearing_deg, camera.sector_max_bearing_deg)


def select_cameras(
    cameras: Sequence[CameraConfig],
    lat: float,
    lon: float,
    n: int = 1,
    *,
    exclude: Collection[str] = (),
) -> list[CameraCandidate]:
    """Up to ``n`` enabled cameras that see (lat, lon), nearest first (ties by id)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    found: list[CameraCandidate] = []
    for cam in cameras:
        if not cam.enabled or cam.id in exclude:
            continue
        d, b = camera_view(cam, lat, lon)
        if sees(cam, d, b):
            found.append(CameraCandidate(cam, d, b))
    found.sort(key=lambda c: (c.distance_m, c.camera.id))
    return found[:n]
