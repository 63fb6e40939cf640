"""``Device`` and ``NoiseLevelObserved`` as pydantic models: the single source of both forms.

Each model holds the *key-values* shape of the FIWARE Smart Data Model (what the
official JSON Schemas validate) and renders the NGSI-LD *normalized* form from it
(``{"type": "Property", "value": ..., "unitCode": "2N", "observedAt": ...}``), so the
two can never disagree. Attribute names follow the models exactly:

* standard (Environment context): ``LAeq``, ``LAmax``, ``LAeq_d`` (the day-period level
  Lday, 06-18 h local, on daily entities), ``LANight`` (Lnight, 22-06 h), ``dateObserved``
  (ISO 8601 interval), ``dateObservedFrom``/``dateObservedTo``, ``location``,
  ``refDevice``, ``sonometerClass``. ``LAS`` is not published: the sensors measure
  fast-weighted levels, and writing them under a slow-weighted name would be wrong.
* Sonopolis context (:mod:`ngsi.context`): ``LA10``/``LA50``/``LA90``, ``LAmin``,
  ``Lden``, ``Levening``, ``thirdOctaveBands``, ``coverage``, ``carHornCount``,
  ``sirenCount``, ``aggregationPeriod``.

The Lden periods (day 06-18 h, evening 18-22 h, night 22-06 h local) are those of France's
transposition of Directive 2002/49/EC (arrêté du 4 avril 2006), not the Directive's default
07-19 / 19-23 / 23-07 h; they are set in ``ingestion/aggregates.py`` (``_lden_statement``) and
``ingestion/aggsql.py`` (TimescaleDB ``lden_daily`` view), not here.

Every level carries ``unitCode`` "2N" (UN/CEFACT decibel). The measured properties
carry ``observedAt`` = start of the period (the bucket key), the interval itself is
in ``dateObservedFrom``/``dateObservedTo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DB_UNIT = "2N"
"""UN/CEFACT common code of the decibel."""

LEVEL_ATTRS: tuple[str, ...] = ("LAeq", "LAmax", "LAmin", "LA10", "LA50", "LA90", "LAeq_d", "LANight", "Levening", "Lden")
"""Attributes in dB: all get ``unitCode`` 2N."""

MEASURED_ATTRS: tuple[str, ...] = LEVEL_ATTRS + ("thirdOctaveBands", "coverage", "carHornCount", "sirenCount")
"""Attributes that vary per period (temporal instances, ``observedAt``)."""

DATETIME_ATTRS: tuple[str, ...] = ("dateObservedFrom", "dateObservedTo")


def iso_z(ts: datetime) -> str:
    """UTC, second precision, ``Z`` suffix: one spelling, so ids and values never drift."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: aggregates are timestamptz")
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_z_column(stamps: Sequence[datetime]) -> list[str]:
    """:func:`iso_z` of a whole column in one numpy pass (a day of minutes is 1,440 stamps).

    Same spelling: UTC, whole seconds (truncated, as ``strftime`` drops microseconds), ``Z``.
    """
    if any(ts.tzinfo is None for ts in stamps):
        raise ValueError("naive datetime in a column of stamps: aggregates are timestamptz")
    seconds = np.floor(np.array([ts.timestamp() for ts in stamps], dtype=np.float64)).astype(np.int64)
    return [f"{s}Z" for s in np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").tolist()]


UNIT_ATTRS: frozenset[str] = frozenset(LEVEL_ATTRS + ("thirdOctaveBands",))
"""Measured attributes that carry ``unitCode`` (dB)."""


def measured_instances(name: str, values: Sequence[Any], observed: Sequence[str]) -> list[dict[str, Any]]:
    """Instances of a measured attribute in normalized form; ``None`` values are left out.

    The one definition of their shape, used for a single bucket by
    :meth:`NoiseLevelObserved.normalized` and for whole series by the temporal view
    (a day of minutes is ~13,000 instances: one comprehension, no call per instance).
    """
    if name in UNIT_ATTRS:
        return [{"type": "Property", "value": v, "observedAt": at, "unitCode": DB_UNIT}
                for v, at in zip(values, observed, strict=True) if v is not None]
    return [{"type": "Property", "value": v, "observedAt": at} for v, at in zip(values, observed, strict=True) if v is not None]


def measured_property(name: str, value: Any, observed_at: str) -> dict[str, Any]:
    """One instance of a measured attribute (see :func:`measured_instances`)."""
    return measured_instances(name, (value,), (observed_at,))[0]


def concise_attribute(attribute: dict[str, Any]) -> Any:
    """One normalized attribute in the concise representation (CIM 009 §4.5.1): lossless, ``type`` dropped.

    A Relationship keeps ``object``; a Property or GeoProperty with nothing besides its
    value is that value alone (a GeoJSON geometry stays recognisable as one), unless the
    value is a JSON object, whose keys would then read as sub-attributes (the DateTime
    ``{"@type", "@value"}``, the bands), or an array, which would read as the instances of
    a multi-attribute (``controlledProperty``); anything with ``observedAt``/``unitCode`` keeps ``value``.
    """
    rest = {k: v for k, v in attribute.items() if k != "type"}
    if attribute.get("type") == "GeoProperty" and set(rest) == {"value"}:
        return rest["value"]
    if attribute.get("type") == "Property" and set(rest) == {"value"} and not isinstance(rest["value"], dict | list):
        return rest["value"]
    return rest


def _date_time(ts: datetime) -> dict[str, str]:
    return {"@type": "DateTime", "@value": iso_z(ts)}


class GeoPoint(BaseModel):
    """GeoJSON Point; coordinates are ``[longitude, latitude]`` (RFC 7946 order)."""

    model_config = ConfigDict(frozen=True)
    type: Literal["Point"] = "Point"
    coordinates: tuple[float, float]

    @classmethod
    def at(cls, latitude: float, longitude: float) -> GeoPoint:
        return cls(coordinates=(longitude, latitude))


class _Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    type: str

    def key_values(self) -> dict[str, Any]:
        """Key-values form (no ``@context``): what the Smart Data Model schema validates."""
        out = self.model_dump(mode="json", exclude_none=True)
        for name in DATETIME_ATTRS + ("dateInstalled",):
            value = getattr(self, name, None)
            if isinstance(value, datetime):
                out[name] = iso_z(value)
        if "location" in out:
            out["location"]["coordinates"] = list(out["location"]["coordinates"])
        return out

    def _attributes(self) -> dict[str, Any]:
        raise NotImplementedError

    def normalized(self, context_url: str | None = None, *, attrs: set[str] | None = None) -> dict[str, Any]:
        """NGSI-LD normalized form; ``context_url`` adds the in-body ``@context`` (ld+json).

        ``attrs`` keeps only those attributes (the ``attrs`` query parameter).
        """
        body: dict[str, Any] = {"id": self.id, "type": self.type}
        for name, attribute in self._attributes().items():
            if attrs is None or name in attrs:
                body[name] = attribute
        if context_url is not None:
            body["@context"] = [context_url]
        return body

    def concise(self, *, attrs: set[str] | None = None) -> dict[str, Any]:
        """Concise representation (``options=concise``), derived from :meth:`normalized`."""
        return {k: v if k in ("id", "type") else concise_attribute(v) for k, v in self.normalized(attrs=attrs).items()}


class Device(_Entity):
    """A Sonopolis sensor as a FIWARE ``Device`` (dataModel.Device 0.0.9)."""

    type: Literal["Device"] = "Device"
    name: str
    location: GeoPoint
    controlledProperty: list[str] = Field(default_factory=lambda: ["noiseLevel"])
    deviceCategory: list[str] = Field(default_factory=lambda: ["sensor", "meter"])
    deviceState: Literal["ok", "inactive"] = "ok"
    dateInstalled: datetime | None = None
    address: dict[str, str] | None = None
    description: str | None = None

    @staticmethod
    def urn(sensor_id: str) -> str:
        return f"urn:ngsi-ld:Device:{sensor_id}"

    def _attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "name": {"type": "Property", "value": self.name},
            "location": {"type": "GeoProperty", "value": self.location.model_dump(mode="json")},
            "controlledProperty": {"type": "Property", "value": list(self.controlledProperty)},
            "deviceCategory": {"type": "Property", "value": list(self.deviceCategory)},
            "deviceState": {"type": "Property", "value": self.deviceState},
        }
        attrs["location"]["value"]["coordinates"] = list(self.location.coordinates)
        if self.dateInstalled is not None:
            attrs["dateInstalled"] = {"type": "Property", "value": _date_time(self.dateInstalled)}
        if self.address:
            attrs["address"] = {"type": "Property", "value": dict(self.address)}
        if self.description:
            attrs["description"] = {"type": "Property", "value": self.description}
        return attrs


class NoiseLevelObserved(_Entity):
    """One aggregation bucket of one sensor as a FIWARE ``NoiseLevelObserved`` (dataModel.Environment 0.2.1)."""

    type: Literal["NoiseLevelObserved"] = "NoiseLevelObserved"
    dateObserved: str
    dateObservedFrom: datetime
    dateObservedTo: datetime
    location: GeoPoint
    refDevice: str
    sonometerClass: Literal["0", "1", "2"] | None = None
    aggregationPeriod: str
    LAeq: float | None = None
    LAmax: float | None = None
    LAmin: float | None = None
    LA10: float | None = None
    LA50: float | None = None
    LA90: float | None = None
    LAeq_d: float | None = None
    LANight: float | None = None
    Levening: float | None = None
    Lden: float | None = None
    thirdOctaveBands: dict[str, float] | None = None
    coverage: float | None = Field(None, ge=0, le=1)
    carHornCount: int | None = Field(None, ge=0)
    sirenCount: int | None = Field(None, ge=0)

    @staticmethod
    def urn(sensor_id: str, period_code: str, start: datetime) -> str:
        return f"urn:ngsi-ld:NoiseLevelObserved:{sensor_id}:{period_code}:{iso_z(start)}"

    def _attributes(self) -> dict[str, Any]:
        observed = iso_z(self.dateObservedFrom)
        attrs: dict[str, Any] = {
            "dateObserved": {"type": "Property", "value": self.dateObserved},
            "dateObservedFrom": {"type": "Property", "value": _date_time(self.dateObservedFrom)},
            "dateObservedTo": {"type": "Property", "value": _date_time(self.dateObservedTo)},
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": list(self.location.coordinates)},
            },
            "refDevice": {"type": "Relationship", "object": self.refDevice},
            "aggregationPeriod": {"type": "Property", "value": self.aggregationPeriod},
        }
        if self.sonometerClass is not None:
            attrs["sonometerClass"] = {"type": "Property", "value": self.sonometerClass}
        for name in MEASURED_ATTRS:
            value = getattr(self, name)
            if value is not None:
                attrs[name] = measured_property(name, value, observed)
        return attrs


def installed_at(day: date | None) -> datetime | None:
    """``installed_on`` (a date) as the midnight-UTC DateTime the Device model expects."""
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
