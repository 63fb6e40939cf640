"""Rows of the smart database (docs/CONTRACTS.md) -> :mod:`ngsi.models` entities.

Used by both the publisher (``ngsi.sync``) and the context source, so an entity read
from the broker and the same entity served by Sonopolis are byte-for-byte alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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


def _levels(values: Iterable[Any]) -> list[float | None]:
    """dB rounded to 0.1 (the meters' resolution); NaN/None -> absent (``f != f``: NaN).

    Column form: the temporal view converts thousands of values per answer.
    """
    return [None if v is None or (f := float(v)) != f else round(f, 1) for v in values]


def _level(value: Any) -> float | None:
    return _levels((value,))[0]


def bands_object(bands: Sequence[float | None] | None) -> dict[str, float] | None:
    """``real[]`` in BAND_KEYS order -> ``{"25": 41.2, ...}`` without the omitted bands."""
    if not bands or bands.count(None) == len(bands):  # a sensor omitting its spectrum: skip the loop
        return None
    # One pass over the column-form conversion (same rounding and NaN rule as _levels), not a
    # call per band: a day of 1-minute spectra is 43,200 values in one temporal answer.
    out = {key: lvl for key, lvl in zip(BAND_KEYS, _levels(bands), strict=False) if lvl is not None}
    return out or None


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
    return [None if v is None else round(min(1.0, max(0.0, float(v))), 4) for v in values]


def _bands_objects(values: Iterable[Any]) -> list[dict[str, float] | None]:
    return [bands_object(v) for v in values]


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
