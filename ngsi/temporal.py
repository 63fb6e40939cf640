"""The temporal view's fast path: each series read along the primary key, instances without models.

A day of 1-minute values is 1,440 buckets x up to 14 attributes; building a pydantic
model per bucket and encoding with the stdlib took ~280 ms per answer. Here the rows
are read series by series along ``(sensor_id, bucket)`` with a LIMIT, and the instances
are made column by column with the models' own conversions (``MEASURED_SOURCES``) and
shape (``measured_instances``); tests/ngsi/test_temporal_fast_path.py checks both.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from ngsi.mapping import (
    LDEN_SOURCES,
    MEASURED_SOURCES,
    PeriodSpec,
    observation_from_row,
)
from ngsi.models import DB_UNIT, MEASURED_ATTRS, UNIT_ATTRS, iso_z_column, measured_instances
from ngsi.selection import Selection, select_sql


def sensor_rows_sql(schema: sql.Identifier) -> sql.Composed:
    """The sensor columns a temporal entity's head needs (:func:`series_head`), every sensor."""
    return sql.SQL("SELECT sensor_id, latitude, longitude, sonometer_class, timezone FROM {}.sensors ORDER BY sensor_id").format(schema)


def temporal_presence_sql(schema: sql.Identifier, period: PeriodSpec, sel: Selection) -> tuple[sql.Composable, list[Any]]:
    """Which of ``sel.sensors`` have at least one instance: one EXISTS probe per series."""
    inner, params = select_sql(schema, period, sel, series=True, per_sensor=True)
    query = sql.SQL("SELECT sensor_id FROM unnest(%s::text[]) AS t(sensor_id) WHERE EXISTS ({})").format(inner)
    return query, [sel.sensors, *params]


def temporal_instances_sql(schema: sql.Identifier, period: PeriodSpec, sel: Selection, per_series: int,
                           newest: bool) -> tuple[sql.Composable, list[Any]]:
    """Up to ``per_series`` rows of each of ``sel.sensors``: the first, or the last (``lastN``).

    Each series is read along the primary key ``(sensor_id, bucket)`` and stops after
    ``per_series`` rows (LATERAL ... ORDER BY bucket LIMIT), so ``lastN=10`` over years
    of minutes reads ten rows, not the years; output by sensor, then time.
    """
    inner, params = select_sql(schema, period, sel, series=True, per_sensor=True, instances_only=True)
    query = sql.SQL(
        "SELECT x.* FROM unnest(%s::text[]) AS t(sensor_id)"
        " CROSS JOIN LATERAL ({} ORDER BY a.bucket {} LIMIT %s) x ORDER BY x.sensor_id, x.bucket"
    ).format(inner, sql.SQL("DESC" if newest else "ASC"))
    return query, [sel.sensors, *params, per_series]


Columns = dict[str, list[Any]]
"""One series' instances column by column: aggregate column name -> values in bucket order."""


def series_columns(names: list[str], rows: list[tuple[Any, ...]]) -> dict[str, Columns]:
    """Rows of :func:`temporal_instances_sql` (tuples, ordered by sensor) -> columns per sensor.

    Column form end to end: a day of minutes is 1,440 rows, and a dict per row (the
    ``dict_row`` factory) cost as much as the conversions of all its values.
    """
    sensor_at = names.index("sensor_id")
    out: dict[str, Columns] = {}
    start = 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or rows[end][sensor_at] != rows[start][sensor_at]:
            out[rows[start][sensor_at]] = dict(zip(names, (list(c) for c in zip(*rows[start:end], strict=True)), strict=True))
            start = end
    return out


def head(columns: Columns, n: int) -> Columns:
    """The first ``n`` instances of a series."""
    return {name: values[:n] for name, values in columns.items()}


STATIC_ATTRS: tuple[str, ...] = ("location", "refDevice", "sonometerClass", "aggregationPeriod")
"""Attributes a temporal entity states once, not per instance."""


def series_head(sensor: dict[str, Any], period: PeriodSpec, first_row: dict[str, Any], attrs: set[str] | None) -> dict[str, Any]:
    """``id``, ``type`` and the static attributes of a series, from its first bucket's model."""
    daily = period.length is None
    first = observation_from_row(period, sensor, first_row, first_row if daily else None).normalized()
    out: dict[str, Any] = {"id": f"urn:ngsi-ld:NoiseLevelObserved:{sensor['sensor_id']}:{period.code}", "type": "NoiseLevelObserved"}
    for name in STATIC_ATTRS:
        if name in first and (attrs is None or name in attrs):
            out[name] = first[name]
    return out


def temporal_entity(sensor: dict[str, Any], period: PeriodSpec, columns: Columns, attrs: set[str] | None,
                     temporal_values: bool) -> dict[str, Any]:
    """Instances of one series: measured attributes as arrays, static ones once.

    The static attributes come from the first bucket's model (``sensor``: its row in
    ``smart.sensors``); the instances are built
    column by column with the model's own conversions (:data:`MEASURED_SOURCES`) and
    shape (:func:`measured_instances`), without a model per bucket (a day of minutes is
    1,440 of them).
    """
    daily = period.length is None
    out = series_head(sensor, period, {name: values[0] for name, values in columns.items()}, attrs)
    sources = {**MEASURED_SOURCES, **LDEN_SOURCES} if daily else MEASURED_SOURCES
    observed = iso_z_column(columns["bucket"])
    for name in MEASURED_ATTRS:
        if name not in sources or (attrs is not None and name not in attrs):
            continue
        column, convert = sources[name]
        values = convert(columns[column])
        if all(v is None for v in values):
            continue
        if temporal_values:
            out[name] = {"type": "Property", "values": [[v, at] for v, at in zip(values, observed, strict=True) if v is not None]}
            if name in UNIT_ATTRS:
                out[name]["unitCode"] = DB_UNIT
        else:
            out[name] = measured_instances(name, values, observed)
    return out
