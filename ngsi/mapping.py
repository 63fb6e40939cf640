"""Rows of the smart database (docs/CONTRACTS.md) -> :mod:`ngsi.models` entities.

Used by both the publisher (``ngsi.sync``) and the context source, so an entity read
from the broker and the same entity served by Sonopolis are byte-for-byte alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from messages.bands import BAND_KEYS
from ngsi.models import Device, GeoPoint, NoiseLevelObserved, installed_at, iso_z


@dataclass(frozen=True)
class PeriodSpec:
    """One aggregation period: its table, its ISO 8601 code (used in ids) and its length."""

    name: str
    table: str
    code: str
    length: timedelta | None  # None: one local calendar day (23, 24 or 25 h)

    def end(self, start: datetime, tz: str) -> datetime:
        if self.length is not None:
            return start + self.length
        zone = ZoneInfo(tz)
        local = start.astimezone(zone)
        return (local.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=zone)


PERIODS: dict[str, PeriodSpec] = {
    "1min": PeriodSpec("1min", "levels_1min", "PT1M", timedelta(minutes=1)),
    "15min": PeriodSpec("15min", "levels_15min", "PT15M", timedelta(minutes=15)),
    "1h": PeriodSpec("1h", "levels_1h", "PT1H", timedelta(hours=1)),
    "1d": PeriodSpec("1d", "levels_1d", "P1D", None),
}
BY_CODE: dict[str, PeriodSpec] = {p.code: p for p in PERIODS.values()}

SENSOR_COLUMNS = ("sensor_id", "name", "latitude", "longitude", "street", "place", "sonometer_class", "installed_on", "timezone", "active")
AGGREGATE_COLUMNS = ("sensor_id", "bucket", "laeq", "lamax", "lamin", "la10", "la50", "la90", "bands", "coverage", "car_horn", "siren")
LDEN_COLUMNS = ("lden", "lday", "levening", "lnight")


PUBLISHED_ROUNDING = "round(({})::numeric, {})::float8"
"""SQL of :func:`published_round` on a ``real`` expression (``ngsi.selection``'s ``q`` columns)."""

_DECIMAL = Context(prec=60, rounding=ROUND_HALF_UP)


def published_round(x: float, ndigits: int) -> float:
    """The one rounding of published values, and of what ``q`` compares: ``round(x::numeric, ndigits)``.

    The values are ``real`` columns, so ``x`` is taken as the float4 nearest to it (exact
    whether it was read in binary or parsed from its text). PostgreSQL casts a ``real`` to
    numeric through its decimal to 6 significant digits (``%.6g``, FLT_DIG; *not* the
    shortest spelling its text output uses: 72.12789 casts to 72.1279), and numeric
    ``round`` goes half away from zero. Both done here: ``60.25`` -> 60.3, ``59.05`` (float4
    59.0499992...) -> 59.1, ``-0.04`` -> 0.0 (numeric has no negative zero), exactly what
    ``ngsi.selection`` compares in SQL (:data:`PUBLISHED_ROUNDING`).
    """
    spelled = Decimal(format(float(np.float32(x)), ".6g"))
    return float(spelled.quantize(Decimal(1).scaleb(-ndigits), context=_DECIMAL)) + 0.0


def round_decimals(values: np.ndarray, ndigits: int) -> np.ndarray:
    """:func:`published_round` of every element, vectorised (NaN stays NaN).

    numpy's ``round`` gives the same for every element whose scaled value is clearly off a
    tie: the 6-digit decimal of the float4 differs from the value by at most half a unit
    of its 6th significant digit (plus the float4 conversion of a value read as text), so
    it cannot be on the other side of a tie that is farther than that. The elements
    within that distance (+1e-3 for numpy's own scaling) of a tie are redone one by one.
    """
    out = np.round(values, ndigits) + 0.0  # no -0.0 (PostgreSQL's numeric has none)
    scaled = values * 10.0**ndigits
    with np.errstate(invalid="ignore", divide="ignore"):
        sixth_digit = 10.0 ** (np.floor(np.log10(np.abs(values))) + ndigits - 5)  # 0 for 0, NaN for NaN
        near = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-3 + sixth_digit
    if near.any():
        flat_out, flat_in = out.reshape(-1), values.reshape(-1)
        for i in np.flatnonzero(near.reshape(-1)).tolist():
            flat_out[i] = published_round(float(flat_in[i]), ndigits)
    return out


def _column(values: Iterable[Any]) -> np.ndarray:
    return np.array(values if isinstance(values, list | tuple) else list(values), dtype=np.float64)  # None -> NaN


def _levels(values: Iterable[Any]) -> list[float | None]:
    """dB rounded to 0.1 (the meters' resolution); NaN/None -> absent.

    Column form, vectorised: the temporal view converts thousands of values per answer
    (``round`` per value was ~40 % of a day-of-minutes answer).
    """
    return [None if v != v else v for v in round_decimals(_column(values), 1).tolist()]


def _level(value: Any) -> float | None:
    return _levels((value,))[0]


def bands_object(bands: Sequence[float | None] | None) -> dict[str, float] | None:
    """``real[]`` in BAND_KEYS order -> ``{"25": 41.2, ...}`` without the omitted bands."""
    return _bands_objects((bands,))[0]


def _bands_objects(values: Iterable[Sequence[float | None] | None]) -> list[dict[str, float] | None]:
    """A column of spectra -> band objects, rounded as :func:`_levels`, in one numpy pass.

    A day of 1-minute spectra is 43,200 values in one temporal answer. Bands a sensor
    omits (NULL, or beyond the end of a short array) are left out; an all-NULL or empty
    spectrum gives None (no ``thirdOctaveBands`` at all).
    """
    spectra = list(values)
    out: list[dict[str, float] | None] = [None] * len(spectra)
    present = [i for i, b in enumerate(spectra) if b]
    if not present:
        return out
    lengths = {len(spectra[i]) for i in present}  # type: ignore[arg-type]
    width = min(len(BAND_KEYS), max(lengths))
    if len(lengths) == 1:  # the usual case: one array shape, one conversion (None -> NaN)
        grid = np.array([spectra[i] for i in present], dtype=np.float64)[:, :width]
    else:
        grid = np.full((len(present), width), np.nan)
        for row, i in enumerate(present):
            b = spectra[i][:width]  # type: ignore[index]
            grid[row, : len(b)] = b
    rounded = round_decimals(grid, 1)
    missing = np.isnan(rounded)
    complete, empty = (~missing.any(axis=1)).tolist(), missing.all(axis=1).tolist()
    keys = BAND_KEYS[:width]
    for i, levels, full, none in zip(present, rounded.tolist(), complete, empty, strict=True):
        if full:
            out[i] = dict(zip(keys, levels, strict=True))
        elif not none:
            out[i] = {k: v for k, v in zip(keys, levels, strict=True) if v == v}
    return out


def device_from_row(row: Mapping[str, Any]) -> Device:
    address = {k: v for k, v in (("streetAddress", row.get("street")), ("addressLocality", row.get("place"))) if v}
    return Device(
        id=Device.urn(row["sensor_id"]),
        name=row.get("name") or row["sensor_id"],
        location=GeoPoint.at(row["latitude"], row["longitude"]),
        deviceState="ok" if row.get("active", True) else "inactive",
        dateInstalled=installed_at(row.get("installed_on")),
        address=address or None,
        description="Acoustic sensor: computes noise levels on the device; no audio is recorded or transmitted.",
    )


def observation_from_row(
    period: PeriodSpec,
    sensor: Mapping[str, Any],
    agg: Mapping[str, Any],
    lden: Mapping[str, Any] | None = None,
) -> NoiseLevelObserved:
    """One aggregate row (+ the sensor row, + the day's Lden row for daily buckets)."""
    start: datetime = agg["bucket"]
    end = period.end(start, sensor.get("timezone") or "Europe/Paris")
    klass = sensor.get("sonometer_class")
    return NoiseLevelObserved(
        id=NoiseLevelObserved.urn(sensor["sensor_id"], period.code, start),
        dateObserved=f"{iso_z(start)}/{iso_z(end)}",
        dateObservedFrom=start,
        dateObservedTo=end,
        location=GeoPoint.at(sensor["latitude"], sensor["longitude"]),
        refDevice=Device.urn(sensor["sensor_id"]),
        sonometerClass=None if klass is None else str(int(klass)),
        aggregationPeriod=period.code,
        **measured_values(agg, lden),
    )


def _coverages(values: Iterable[Any]) -> list[float | None]:
    """Share of the period measured, clamped to 0..1, to 4 decimals (column form, as :func:`_levels`).

    ``q`` compares the same (``ngsi.selection``): keep the two together.
    """
    return [None if v != v else v for v in round_decimals(np.clip(_column(values), 0.0, 1.0), 4).tolist()]


def _as_is(values: Iterable[Any]) -> list[Any]:
    return list(values)


Convert = Callable[[Iterable[Any]], list[Any]]

MEASURED_SOURCES: dict[str, tuple[str, Convert]] = {
    "LAeq": ("laeq", _levels),
    "LAmax": ("lamax", _levels),
    "LAmin": ("lamin", _levels),
    "LA10": ("la10", _levels),
    "LA50": ("la50", _levels),
    "LA90": ("la90", _levels),
    "thirdOctaveBands": ("bands", _bands_objects),
    "coverage": ("coverage", _coverages),
    "carHornCount": ("car_horn", _as_is),
    "sirenCount": ("siren", _as_is),
}
"""Per-bucket attribute -> (aggregate column, conversion as published, applied to a column of values)."""

LDEN_SOURCES: dict[str, tuple[str, Convert]] = {
    "Lden": ("lden", _levels),
    "LAeq_d": ("lday", _levels),
    "Levening": ("levening", _levels),
    "LANight": ("lnight", _levels),
}
"""Daily-only attribute -> (``smart.lden_daily`` column, conversion)."""


def measured_values(agg: Mapping[str, Any], lden: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The per-bucket attribute values of one aggregate row (+ Lden row), as published.

    :func:`observation_from_row` validates them into a model; the temporal view applies
    the same :data:`MEASURED_SOURCES` conversions to whole columns, without a model.
    """
    fields: dict[str, Any] = {name: convert((agg.get(column),))[0] for name, (column, convert) in MEASURED_SOURCES.items()}
    if lden is not None:
        fields.update({name: convert((lden.get(column),))[0] for name, (column, convert) in LDEN_SOURCES.items()})
    return fields


def parse_observation_id(entity_id: str) -> tuple[str, PeriodSpec, datetime] | None:
    """``urn:ngsi-ld:NoiseLevelObserved:<sensor>:<code>:<start>`` -> parts, or None if not ours."""
    prefix = "urn:ngsi-ld:NoiseLevelObserved:"
    if not entity_id.startswith(prefix):
        return None
    rest = entity_id[len(prefix):]
    for code, spec in BY_CODE.items():
        marker = f":{code}:"
        sensor, sep, stamp = rest.partition(marker)
        if sep and sensor:
            try:
                start = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                return None
            if start.tzinfo is None:
                return None
            return sensor, spec, start
    return None


def day_of(start: datetime, tz: str) -> date:
    """Local calendar day of a daily bucket (the key of ``smart.lden_daily``)."""
    return start.astimezone(ZoneInfo(tz)).date()
