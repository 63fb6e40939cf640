"""Geometry on the city's scale: a local East-North-Up frame in metres around an origin.

Why a tangent plane: TDOA multilateration, camera aiming and "is it in range" are all
Euclidean problems over a few kilometres. Solving them in metres is simple and well
conditioned; degrees are not. The conversion here is the exact WGS84 geodetic <-> ECEF
<-> ENU chain (no flat-earth approximation), so a round trip is exact to well under a
millimetre and ENU distances match geodesic distances to < 0.1 m over a few km (the
only difference is Earth curvature, ~d^3/R^2, i.e. ~1 mm at 5 km).

Conventions: latitude/longitude in decimal degrees (WGS84), heights in metres above
the ellipsoid (any consistent height works: only differences matter locally),
bearings in degrees clockwise from true north in [0, 360).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# WGS84 ellipsoid.
WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_B = WGS84_A * (1.0 - WGS84_F)
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
WGS84_EP2 = WGS84_E2 / (1.0 - WGS84_E2)
MEAN_EARTH_RADIUS_M = 6_371_008.8

ArrayLike = float | npt.NDArray[np.float64]


class GeoError(ValueError):
    """A coordinate outside its valid domain (latitude beyond ±90°, not finite...)."""


def check_lat_lon(lat: float, lon: float) -> None:
    """Raise :class:`GeoError` naming the bad value; used by every public entry point."""
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise GeoError(f"latitude {lat!r} outside [-90, 90]")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise GeoError(f"longitude {lon!r} outside [-180, 180]")


def geodetic_to_ecef(lat: ArrayLike, lon: ArrayLike, h: ArrayLike = 0.0) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
    """WGS84 geodetic (degrees, metres) -> Earth-centred Earth-fixed (metres)."""
    phi = np.radians(lat)
    lam = np.radians(lon)
    sin_phi = np.sin(phi)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
    x = (n + h) * np.cos(phi) * np.cos(lam)
    y = (n + h) * np.cos(phi) * np.sin(lam)
    z = (n * (1.0 - WGS84_E2) + h) * sin_phi
    return x, y, z


def ecef_to_geodetic(x: ArrayLike, y: ArrayLike, z: ArrayLike) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
    """ECEF -> WGS84 geodetic by Bowring's start and fixed-point refinement (sub-mm near the surface)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    z = np.asarray(z, dtype=float)
    lam = np.arctan2(y, x)
    p = np.hypot(x, y)
    theta = np.arctan2(z * WGS84_A, p * WGS84_B)
    phi = np.arctan2(z + WGS84_EP2 * WGS84_B * np.sin(theta) ** 3, p - WGS84_E2 * WGS84_A * np.cos(theta) ** 3)
    for _ in range(3):
        sin_phi = np.sin(phi)
        n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
        h = p / np.cos(phi) - n
        phi = np.arctan2(z, p * (1.0 - WGS84_E2 * n / (n + h)))
    sin_phi = np.sin(phi)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
    h = p / np.cos(phi) - n
    return _scalar(np.degrees(phi)), _scalar(np.degrees(lam)), _scalar(h)


def _scalar(a: npt.NDArray[np.float64]) -> ArrayLike:
    return float(a) if np.ndim(a) == 0 else a


@dataclass(frozen=True)
class LocalFrame:
    """East-North-Up tangent plane at ``origin`` (the city centre, or an incident's sensors).

    Vectorised: every method accepts floats or numpy arrays of equal shape.
    """

    origin_lat: float
    origin_lon: float
    origin_h: float = 0.0
    _ecef0: tuple[float, float, float] = field(init=False, repr=False, compare=False)
    _rot: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_lat_lon(self.origin_lat, self.origin_lon)
        x0, y0, z0 = geodetic_to_ecef(self.origin_lat, self.origin_lon, self.origin_h)
        phi, lam = math.radians(self.origin_lat), math.radians(self.origin_lon)
        sp, cp, sl, cl = math.sin(phi), math.cos(phi), math.sin(lam), math.cos(lam)
        rot = np.array(
            [
                [-sl, cl, 0.0],  # east
                [-sp * cl, -sp * sl, cp],  # north
                [cp * cl, cp * sl, sp],  # up
            ]
        )
        object.__setattr__(self, "_ecef0", (float(x0), float(y0), float(z0)))
        object.__setattr__(self, "_rot", rot)

    def to_enu(self, lat: ArrayLike, lon: ArrayLike, h: ArrayLike = 0.0) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
        """WGS84 -> (east, north, up) metres relative to the origin."""
        if isinstance(lat, float | int) and isinstance(lon, float | int) and isinstance(h, float | int):
            return self._to_enu_scalar(float(lat), float(lon), float(h))
        x, y, z = geodetic_to_ecef(lat, lon, h)
        d = np.stack([np.asarray(x) - self._ecef0[0], np.asarray(y) - self._ecef0[1], np.asarray(z) - self._ecef0[2]])
        e, n, u = np.tensordot(self._rot, d, axes=1)
        return _scalar(e), _scalar(n), _scalar(u)

    def _to_enu_scalar(self, lat: float, lon: float, h: float) -> tuple[float, float, float]:
        """Same maths with ``math`` on floats: ~10x faster than numpy for one point (hot path)."""
        phi, lam = math.radians(lat), math.radians(lon)
        sp = math.sin(phi)
        n = WGS84_A / math.sqrt(1.0 - WGS84_E2 * sp * sp)
        cp = math.cos(phi)
        dx = (n + h) * cp * math.cos(lam) - self._ecef0[0]
        dy = (n + h) * cp * math.sin(lam) - self._ecef0[1]
        dz = (n * (1.0 - WGS84_E2) + h) * sp - self._ecef0[2]
        r = self._rot
        return (
            float(r[0, 0] * dx + r[0, 1] * dy + r[0, 2] * dz),
            float(r[1, 0] * dx + r[1, 1] * dy + r[1, 2] * dz),
            float(r[2, 0] * dx + r[2, 1] * dy + r[2, 2] * dz),
        )

    def to_geodetic(self, e: ArrayLike, n: ArrayLike, u: ArrayLike = 0.0) -> tuple[ArrayLike, ArrayLike, ArrayLike]:
        """(east, north, up) metres -> WGS84 (lat, lon, h)."""
        enu = np.stack(np.broadcast_arrays(np.asarray(e, float), np.asarray(n, float), np.asarray(u, float)))
        dx, dy, dz = np.tensordot(self._rot.T, enu, axes=1)
        return ecef_to_geodetic(dx + self._ecef0[0], dy + self._ecef0[1], dz + self._ecef0[2])

    def to_en(self, lat: float, lon: float) -> tuple[float, float]:
        """Horizontal position only (east, north), the common case for a point on the map."""
        e, n, _ = self.to_enu(lat, lon, self.origin_h)
        return float(e), float(n)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on the mean sphere; within 0.5 % of the geodesic, enough for ranking."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dphi, dlam = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlam / 2) ** 2
    return 2.0 * MEAN_EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Horizontal distance measured in the tangent plane at the first point (exact at city scale)."""
    e, n = LocalFrame(lat1, lon1).to_en(lat2, lon2)
    return math.hypot(e, n)


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Direction from point 1 to point 2, degrees clockwise from true north, in [0, 360)."""
    e, n = LocalFrame(lat1, lon1).to_en(lat2, lon2)
    return enu_bearing_deg(e, n)


def enu_bearing_deg(east: float, north: float) -> float:
    """Bearing of a horizontal ENU vector, degrees clockwise from north, in [0, 360)."""
    return math.degrees(math.atan2(east, north)) % 360.0


def angle_diff_deg(a: float, b: float) -> float:
    """Signed smallest difference a - b, in (-180, 180]."""
    d = (a - b) % 360.0
    return d - 360.0 if d > 180.0 else d


def bearing_in_sector(bearing: float, start: float, end: float) -> bool:
    """Whether ``bearing`` lies in the clockwise sector from ``start`` to ``end`` (wraps past north).

    ``start == end`` means the full circle (a dome camera with endless pan).
    """
    start, end, bearing = start % 360.0, end % 360.0, bearing % 360.0
    if math.isclose(start, end):
        return True
    width = (end - start) % 360.0
    return (bearing - start) % 360.0 <= width + 1e-9
