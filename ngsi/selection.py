"""The SELECT behind both NGSI-LD views: one aggregation period's rows with every filter.

``smart.levels_1min/15min/1h/1d`` joined to ``smart.sensors`` (and, for daily rows, to
``smart.lden_daily``); ``q`` compiles against :func:`_columns`, rounded as published
(:func:`ngsi.mapping.published_round`: PostgreSQL's ``round(x::numeric, n)`` of the ``real``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from ngsi.mapping import PUBLISHED_ROUNDING, PeriodSpec
from ngsi.query import Column, TimeRange, compile_q


def _columns(period: PeriodSpec) -> dict[str, Column]:
    """Queryable attributes of ``period``'s rows, rounded as published."""

    def rounded(expr: str, ndigits: int) -> Column:
        # exactly ngsi.mapping.published_round, which rounds what is published
        return Column(sql.SQL(PUBLISHED_ROUNDING).format(sql.SQL(expr), sql.Literal(ndigits)), "number")

    def lvl(expr: str) -> Column:
        return rounded(expr, 1)

    daily = period.length is None
    cols = {
        "LAeq": lvl("a.laeq"), "LAmax": lvl("a.lamax"), "LAmin": lvl("a.lamin"),
        "LA10": lvl("a.la10"), "LA50": lvl("a.la50"), "LA90": lvl("a.la90"),
        "coverage": rounded("least(greatest(a.coverage, 0::real), 1::real)", 4),  # as ngsi.mapping._coverages
        "carHornCount": Column(sql.SQL("a.car_horn::float8"), "number"),
        "sirenCount": Column(sql.SQL("a.siren::float8"), "number"),
        "sonometerClass": Column(sql.SQL("s.sonometer_class::text"), "text"),
        "refDevice": Column(sql.SQL("('urn:ngsi-ld:Device:' || a.sensor_id)"), "text"),
        "aggregationPeriod": Column(sql.Literal(period.code), "text"),
        "dateObservedFrom": Column(sql.SQL("a.bucket"), "datetime"),
    }
    for attr, col in (("Lden", "lden"), ("LAeq_d", "lday"), ("Levening", "levening"), ("LANight", "lnight")):
        cols[attr] = lvl(f"l.{col}") if daily else Column(sql.SQL("NULL::float8"), "number")
    return cols


ALWAYS_PRESENT = frozenset({"dateObserved", "dateObservedFrom", "dateObservedTo", "location", "refDevice", "aggregationPeriod"})
"""Attributes every published ``NoiseLevelObserved`` has (``ngsi.models.NoiseLevelObserved``)."""


def _has_any(period: PeriodSpec, attrs: set[str]) -> sql.Composable:
    """True for the rows whose published entity has at least one of ``attrs`` (the ``attrs`` match).

    The measured ones exist when their value does, as the bare name of a ``q`` tests it
    (:func:`_columns`); ``thirdOctaveBands`` when at least one band is there
    (:func:`ngsi.mapping.bands_object`). Unknown names match nothing.
    """
    if attrs & ALWAYS_PRESENT:
        return sql.SQL("true")
    columns = _columns(period)
    tests: list[sql.Composable] = [sql.SQL("({} IS NOT NULL)").format(columns[a].expr) for a in sorted(attrs) if a in columns]
    if "thirdOctaveBands" in attrs:
        tests.append(sql.SQL("(array_remove(a.bands, NULL) <> '{}')"))  # not formatted: braces as they are
    return sql.SQL("(") + sql.SQL(" OR ").join(tests) + sql.SQL(")") if tests else sql.SQL("false")


@dataclass
class Selection:
    """What a request selects, common to both views."""

    periods: list[PeriodSpec]
    sensors: list[str] | None  # None: all
    keys: list[tuple[str, Any]] | None  # (sensor, bucket) pairs from per-bucket ids
    id_pattern: str | None
    q: str | None
    time: TimeRange
    attrs: set[str] | None = None  # the entity must have one of them (None: no matching)


def select_sql(schema: sql.Identifier, period: PeriodSpec, sel: Selection, series: bool,
                per_sensor: bool = False, instances_only: bool = False) -> tuple[sql.Composable, list[Any]]:
    """One period's SELECT with every filter; ``series``: idPattern applies to series ids.

    ``per_sensor``: the sensor is ``t.sensor_id`` of an enclosing ``unnest(...) AS t``
    (a LATERAL or EXISTS subquery), so each series is read along the primary key
    ``(sensor_id, bucket)`` instead of all selected series at once.
    ``instances_only``: only what varies per bucket (the temporal view takes the sensor's
    columns once, not on each of its 1,440 rows a day), spectra without any band as NULL.
    """
    daily = period.length is None
    extra = (
        sql.SQL(", l.lden, l.lday, l.levening, l.lnight")
        if daily
        else sql.SQL(", NULL::real AS lden, NULL::real AS lday, NULL::real AS levening, NULL::real AS lnight")
    )
    join = (
        sql.SQL(" LEFT JOIN {}.lden_daily l ON l.sensor_id = a.sensor_id AND l.day = (a.bucket AT TIME ZONE s.timezone)::date").format(schema)
        if daily
        else sql.SQL("")
    )
    where: list[sql.Composable] = []
    params: list[Any] = []
    if per_sensor:
        where.append(sql.SQL("a.sensor_id = t.sensor_id"))
    elif sel.sensors is not None:
        where.append(sql.SQL("a.sensor_id = ANY(%s)"))
        params.append(sel.sensors)
    if sel.keys is not None:
        where.append(sql.SQL("(a.sensor_id, a.bucket) IN (SELECT * FROM unnest(%s::text[], %s::timestamptz[]))"))
        params += [[k[0] for k in sel.keys], [k[1] for k in sel.keys]]
    if sel.id_pattern is not None:
        stamp = sql.SQL("") if series else sql.SQL(" || ':' || to_char(a.bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
        where.append(sql.SQL("('urn:ngsi-ld:NoiseLevelObserved:' || a.sensor_id || ':' || {}{}) ~ %s").format(sql.Literal(period.code), stamp))
        params.append(sel.id_pattern)
    t = sel.time
    for value, op in ((t.after, ">"), (t.since, ">="), (t.before, "<")):
        if value is not None:
            where.append(sql.SQL("a.bucket {} %s").format(sql.SQL(op)))
            params.append(value)
    if sel.attrs is not None:
        where.append(_has_any(period, sel.attrs))
    if sel.q:
        expr, qparams = compile_q(sel.q, _columns(period))
        where.append(expr)
        params += qparams
    if instances_only:
        # an all-NULL spectrum publishes no thirdOctaveBands (bands_object): skip parsing it
        columns = sql.SQL(
            "a.sensor_id, a.bucket, a.laeq, a.lamax, a.lamin, a.la10, a.la50, a.la90,"
            " CASE WHEN array_remove(a.bands, NULL) = '{{}}' THEN NULL ELSE a.bands END AS bands,"
            " a.coverage, a.car_horn, a.siren{extra}"
        ).format(extra=extra if daily else sql.SQL(""))
    else:
        columns = sql.SQL(
            "a.sensor_id, a.bucket, a.laeq, a.lamax, a.lamin, a.la10, a.la50, a.la90, a.bands, a.coverage,"
            " a.car_horn, a.siren, s.name, s.latitude, s.longitude, s.sonometer_class, s.timezone{extra}, {code} AS code"
        ).format(extra=extra, code=sql.Literal(period.code))
    query = sql.SQL("SELECT {columns} FROM {schema}.{table} a JOIN {schema}.sensors s USING (sensor_id){join} WHERE {where}").format(
        columns=columns, schema=schema, table=sql.Identifier(period.table), join=join,
        where=sql.SQL(" AND ").join(where) if where else sql.SQL("true"),
    )
    return query, params
