"""Where did the sound come from? TDOA multilateration from sensors' onset times.

Each sensor timestamps the onset of an impulsive sound with its GPS/NTP-disciplined
clock (jitter ~0.5-2 ms). With three or more sensors the unknowns are the source's
horizontal position (east, north) and the emission time t0; each arrival gives one
equation ``t_i = t0 + |p - s_i| / c``. We solve them by non-linear least squares
(``scipy.optimize.least_squares``), started from a weighted centroid of the sensors
(earliest arrivals weigh most) plus a ring of alternative starts, because with few
sensors the cost surface can hold a mirror solution.

The uncertainty is honest rather than hopeful: the Jacobian covariance is scaled by
the larger of the assumed clock jitter and the observed residual variance, and reported
as the radius of the circle holding 95 % of the 2-D Gaussian (exact, not the
semi-major-axis shortcut). Collinear sensors cannot tell a source from its mirror image
across their line: we then report the point on the line, with a radius covering both.

An echo (a sensor that heard a reflection first) arrives late and breaks the fit: a
robust first pass (soft-L1 loss) flags arrivals whose residual exceeds
``outlier_threshold_ms``; they are dropped (while 3 sensors remain) and the fit redone.

With fewer than 3 usable sensors we return the earliest sensor's position and its
detection radius as the uncertainty (``method="sensor"``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.optimize import brentq, least_squares

from safecity_bridge.geo import LocalFrame, check_lat_lon

log = logging.getLogger(__name__)

Method = Literal["tdoa", "sensor"]


def speed_of_sound(temperature_c: float) -> float:
    """Speed of sound in dry air (m/s): 331.3 * sqrt(1 + T/273.15)."""
    if not math.isfinite(temperature_c) or not -60.0 <= temperature_c <= 60.0:
        raise ValueError(f"air temperature {temperature_c!r} °C outside the plausible range [-60, 60]")
    return 331.3 * math.sqrt(1.0 + temperature_c / 273.15)


class Arrival(BaseModel):
    """One sensor's onset of one sound, as the bridge received it."""

    model_config = ConfigDict(frozen=True)

    sensor_id: str = Field(min_length=1, max_length=64)
    position: tuple[float, float, float] = Field(description="(latitude, longitude, elevation m) of the microphone")
    onset: datetime = Field(description="Onset time, timezone-aware (UTC)")

    @field_validator("position")
    @classmethod
    def _valid_position(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        check_lat_lon(v[0], v[1])
        if not math.isfinite(v[2]):
            raise ValueError("elevation must be finite")
        return v

    @field_validator("onset")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("onset must be timezone-aware")
        return v


class SourceEstimate(BaseModel):
    """The estimated position of a sound source, with its 95 % uncertainty radius."""

    model_config = ConfigDict(frozen=True)

    lat: float
    lon: float
    uncertainty_m: float = Field(ge=0.0, description="Radius of the circle holding the source with ~95 % probability")
    method: Method
    sensor_ids: tuple[str, ...] = Field(description="Sensors used in the estimate")
    residual_rms_ms: float | None = Field(None, description="RMS timing residual of the fit (tdoa only)")
    rejected_sensor_ids: tuple[str, ...] = Field((), description="Arrivals dropped as outliers (echoes) or duplicates")
    emitted_at: datetime | None = Field(None, description="Estimated emission time (tdoa only)")
    degenerate: bool = Field(False, description="Sensor geometry could not resolve the position well (e.g. collinear)")


def _radius95(cov: npt.NDArray[np.float64], p: float = 0.95) -> float:
    """Radius R with P(|X| <= R) = p for X ~ N(0, cov) in 2-D (exact, by angular integration)."""
    eig = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    if eig[-1] <= 0.0:
        return 0.0
    theta = np.linspace(0.0, np.pi / 2, 256)
    q = eig[0] * np.cos(theta) ** 2 + eig[1] * np.sin(theta) ** 2  # variance along each polar direction of Z
    q = np.maximum(q, eig[-1] * 1e-12)

    def coverage(r: float) -> float:
        return float(np.mean(1.0 - np.exp(-(r * r) / (2.0 * q)))) - p

    hi = math.sqrt(-2.0 * math.log(1.0 - p) * eig[-1]) * 1.0001  # circle for the major axis alone: always enough
    return float(brentq(coverage, 0.0, hi, xtol=1e-6))


def _residuals(params: npt.NDArray[np.float64], s: npt.NDArray[np.float64], t_ms: npt.NDArray[np.float64], c_m_per_ms: float, z: float) -> npt.NDArray[np.float64]:
    d = np.sqrt((params[0] - s[:, 0]) ** 2 + (params[1] - s[:, 1]) ** 2 + (z - s[:, 2]) ** 2)
    return (t_ms - params[2]) - d / c_m_per_ms


def _jacobian(params: npt.NDArray[np.float64], s: npt.NDArray[np.float64], t_ms: npt.NDArray[np.float64], c_m_per_ms: float, z: float) -> npt.NDArray[np.float64]:
    dx, dy = params[0] - s[:, 0], params[1] - s[:, 1]
    d = np.maximum(np.sqrt(dx**2 + dy**2 + (z - s[:, 2]) ** 2), 1e-6)
    return np.column_stack([-dx / (d * c_m_per_ms), -dy / (d * c_m_per_ms), -np.ones_like(d)])


def _fit(s: npt.NDArray[np.float64], t_ms: npt.NDArray[np.float64], c: float, z: float, loss: str, f_scale: float, search_m: float, good_ms: float):
    """Fit from the weighted centroid; if that lands badly, also from a ring of starts (mirror solutions)."""
    w = 1.0 / (1.0 + np.argsort(np.argsort(t_ms)))
    cx, cy = np.average(s[:, 0], weights=w), np.average(s[:, 1], weights=w)
    ring = [(cx + search_m * math.cos(a), cy + search_m * math.sin(a)) for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    best = None
    for k, (x0, y0) in enumerate([(cx, cy), *ring]):
        d0 = np.sqrt((x0 - s[:, 0]) ** 2 + (y0 - s[:, 1]) ** 2 + (z - s[:, 2]) ** 2)
        t0 = float(np.min(t_ms - d0 / c))
        res = least_squares(_residuals, np.array([x0, y0, t0]), jac=_jacobian, args=(s, t_ms, c, z), loss=loss, f_scale=f_scale, method="trf", x_scale="jac")
        if best is None or res.cost < best.cost - 1e-12:
            best = res
        # A start that explains every arrival to within jitter needs no second opinion,
        # except with exactly 3 sensors (always a perfect fit; the mirror may fit too).
        if k == 0 and len(t_ms) > 3 and float(np.max(np.abs(res.fun))) <= good_ms:
            break
    assert best is not None
    return best


def locate(
    arrivals: Sequence[Arrival],
    temperature_c: float,
    *,
    clock_jitter_ms: float = 1.0,
    detection_radius_m: float = 150.0,
    outlier_threshold_ms: float | None = None,
    max_source_distance_m: float = 2_000.0,
    source_height_m: float | None = None,
    sensor_mount_height_m: float = 4.0,
) -> SourceEstimate:
    """Estimate the source of one sound heard by ``arrivals`` (one per sensor).

    ``clock_jitter_ms`` is the assumed 1-sigma timing error of one onset;
    ``outlier_threshold_ms`` (default 5 sigma, at least 3 ms) flags echoes;
    ``source_height_m`` is the source's elevation (default: the lowest sensor's minus
    ``sensor_mount_height_m``, i.e. street level under a pole-mounted microphone;
    it matters within a few metres of a sensor). Never raises on geometry: a
    fit that fails or lands absurdly far falls back to the sensor method.
    """
    if not arrivals:
        raise ValueError("locate() needs at least one arrival")
    if clock_jitter_ms <= 0 or detection_radius_m <= 0:
        raise ValueError("clock_jitter_ms and detection_radius_m must be positive")
    c = speed_of_sound(temperature_c) / 1000.0  # metres per millisecond

    # One arrival per sensor: the earliest (a re-sent or doubled detection is not a new sensor).
    by_sensor: dict[str, Arrival] = {}
    duplicates: list[str] = []
    for a in sorted(arrivals, key=lambda a: a.onset):
        if a.sensor_id in by_sensor:
            duplicates.append(a.sensor_id)
        else:
            by_sensor[a.sensor_id] = a
    usable = list(by_sensor.values())
    earliest = usable[0]
    if len(usable) < 3:
        return _sensor_estimate(earliest, usable, detection_radius_m, tuple(duplicates))

    frame = LocalFrame(earliest.position[0], earliest.position[1], earliest.position[2])
    enu = [frame.to_enu(*a.position) for a in usable]
    s = np.array([[float(e), float(n), float(u)] for e, n, u in enu])
    if source_height_m is None:
        z = float(s[:, 2].min()) - sensor_mount_height_m
    else:
        z = float(frame.to_enu(earliest.position[0], earliest.position[1], source_height_m)[2])
    t_ms = np.array([(a.onset - earliest.onset) / timedelta(milliseconds=1) for a in usable])
    ids = [a.sensor_id for a in usable]
    threshold = outlier_threshold_ms if outlier_threshold_ms is not None else max(5.0 * clock_jitter_ms, 3.0)
    aperture = float(np.max(np.linalg.norm(s[:, :2] - s[:, :2].mean(axis=0), axis=1)))
    search = max(aperture, 50.0)

    # Physically impossible: a sound cannot reach a sensor later than the straight path
    # from the first sensor allows (plus jitter). Such an arrival is an echo or a bad clock.
    keep = (t_ms - np.linalg.norm(s - s[0], axis=1) / c) <= threshold
    if keep.sum() < 3:
        impossible = tuple(i for i, k in zip(ids, keep) if not k)
        return _sensor_estimate(earliest, [a for a, k in zip(usable, keep) if k], detection_radius_m, tuple(duplicates) + impossible)
    if keep.sum() >= 4:  # with exactly 3 there is no redundancy to recognise an echo
        robust = _fit(s[keep], t_ms[keep], c, z, "soft_l1", threshold / 2, search, threshold)
        r = np.abs(_residuals(robust.x, s, t_ms, c, z))
        while keep.sum() > 3 and (r[keep].max() > threshold):
            worst = int(np.argmax(np.where(keep, r, -1.0)))
            keep[worst] = False
            refit = _fit(s[keep], t_ms[keep], c, z, "soft_l1", threshold / 2, search, threshold)
            r = np.abs(_residuals(refit.x, s, t_ms, c, z))
    rejected = tuple(duplicates) + tuple(i for i, k in zip(ids, keep) if not k)

    sk, tk = s[keep], t_ms[keep]
    res = _fit(sk, tk, c, z, "linear", 1.0, search, threshold)
    x, y, t0 = res.x
    resid = res.fun
    rms = float(np.sqrt(np.mean(resid**2)))
    dof = len(tk) - 3
    sigma2 = clock_jitter_ms**2
    if dof > 0:
        sigma2 = max(sigma2, float(np.sum(resid**2)) / dof)

    jac = res.jac
    jtj = jac.T @ jac
    degenerate = False
    try:
        cond = np.linalg.cond(jtj)
        if not np.isfinite(cond) or cond > 1e12:
            raise np.linalg.LinAlgError("ill-conditioned normal matrix")
        cov = np.linalg.inv(jtj)[:2, :2] * sigma2
        radius = _radius95(cov)
    except np.linalg.LinAlgError:
        degenerate, radius = True, math.inf

    # Collinear sensors: position and its mirror across the line fit equally well.
    centred = sk[:, :2] - sk[:, :2].mean(axis=0)
    sv = np.linalg.svd(centred, compute_uv=False)
    if sv[0] > 0 and sv[-1] / sv[0] < 0.05:
        degenerate = True
        normal = np.linalg.svd(centred)[2][1]  # unit vector across the sensor line
        offset = float(np.dot(np.array([x, y]) - sk[:, :2].mean(axis=0), normal))
        x, y = x - offset * normal[0], y - offset * normal[1]
        radius = abs(offset) + (radius if math.isfinite(radius) else detection_radius_m)

    nearest = float(np.min(np.hypot(sk[:, 0] - x, sk[:, 1] - y)))
    if not res.success or not math.isfinite(radius) or nearest > max_source_distance_m:
        log.info("tdoa fit unusable (success=%s, radius=%s, nearest_sensor_m=%.0f): sensor fallback", res.success, radius, nearest)
        return _sensor_estimate(earliest, usable, detection_radius_m, tuple(duplicates), degenerate=True)
    if rejected:
        log.info("tdoa: %d arrival(s) rejected (outliers/duplicates)", len(rejected))

    lat, lon, _ = frame.to_geodetic(x, y, z)
    return SourceEstimate(
        lat=float(lat),
        lon=float(lon),
        uncertainty_m=float(radius),
        method="tdoa",
        sensor_ids=tuple(i for i, k in zip(ids, keep) if k),
        residual_rms_ms=rms,
        rejected_sensor_ids=rejected,
        emitted_at=earliest.onset + timedelta(milliseconds=float(t0)),
        degenerate=degenerate,
    )


def _sensor_estimate(earliest: Arrival, usable: list[Arrival], radius: float, rejected: tuple[str, ...], degenerate: bool = False) -> SourceEstimate:
    """Too few sensors (or an unusable fit): the first sensor to hear it, within its detection radius."""
    return SourceEstimate(
        lat=earliest.position[0],
        lon=earliest.position[1],
        uncertainty_m=radius,
        method="sensor",
        sensor_ids=tuple(a.sensor_id for a in usable),
        rejected_sensor_ids=rejected,
        degenerate=degenerate,
    )
