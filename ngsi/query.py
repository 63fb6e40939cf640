"""NGSI-LD query parameters -> checked values and parameterised SQL (CIM 009 §4.9, §4.10, §4.11).

* ``q``: ``attr op value`` terms joined by ``;`` (and) and ``|`` (or), with parentheses;
  ops ``== != > >= < <=``; values: numbers, ``"strings"``, ISO date-times, ranges
  ``a..b`` and lists ``a,b`` (with ``==``/``!=``); a bare attribute name tests existence.
  Attribute names may be short (context terms) or expanded IRIs.
* geo-queries: ``georel=near;maxDistance==m`` / ``near;minDistance==m`` (geometry Point),
  ``within`` / ``intersects`` (Polygon), ``disjoint``, on ``geoproperty=location``.
  Sensors are few, so they are selected in Python (haversine, ray casting).
* temporal: ``timerel=before|after|between`` with ``timeAt``/``endTimeAt`` on
  ``observedAt`` (the bucket start), ``lastN``.

Every error is a :class:`NgsiProblem` that the router turns into a ProblemDetails body.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from ngsi.context import VOCAB
from ngsi.models import DATETIME_ATTRS, MEASURED_ATTRS

ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
_ENV_NS = "https://smartdatamodels.org/dataModel.Environment/"
EARTH_RADIUS_M = 6_371_008.8


class NgsiProblem(Exception):
    """An NGSI-LD error: ``kind`` is the last segment of the ETSI error type URI."""

    def __init__(self, status: int, kind: str, title: str, detail: str | None = None) -> None:
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        super().__init__(f"{status} {kind}: {title}" + (f" ({detail})" if detail else ""))

    def body(self) -> dict[str, Any]:
        """ProblemDetails; ``detail`` is mandatory in NGSI-LD (CIM 009 §5.5.2), so the title stands in when there is none."""
        return {"type": ERRORS + self.kind, "title": self.title, "status": self.status, "detail": self.detail or self.title}


def bad(title: str, detail: str | None = None) -> NgsiProblem:
    return NgsiProblem(400, "BadRequestData", title, detail)


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+")


def entity_id(eid: str) -> str:
    """``eid`` when it is a URI (RFC 3986 scheme, no spaces).

    CIM 009: an id that is not a URI is BadRequestData, not an entity that happens not to exist.
    """
    if not _URI.fullmatch(eid):
        raise bad("Invalid entity id", f"{eid!r} is not a URI")
    return eid


def entity_ids(raw: str) -> list[str]:
    """The ``id`` query parameter: a comma-separated list of URIs (:func:`entity_id`)."""
    return [entity_id(i.strip()) for i in raw.split(",")]


def compact(term: str) -> str:
    """Expanded IRI -> the short term we serve; short terms are returned unchanged."""
    for ns in (_ENV_NS, VOCAB, "https://smartdatamodels.org/"):
        if term.startswith(ns):
            return term[len(ns):]
    if term == "https://uri.etsi.org/ngsi-ld/location":
        return "location"
    return term


NOISE_TYPES = frozenset({"NoiseLevelObserved", _ENV_NS + "NoiseLevelObserved"})

PUBLISHED_ATTRS = frozenset(MEASURED_ATTRS + DATETIME_ATTRS + ("dateObserved", "location", "refDevice", "sonometerClass", "aggregationPeriod"))
"""Every attribute a ``NoiseLevelObserved`` may have: a ``q`` term on one of these that cannot be compared is a
400; on any other name it is false (the entity lacks the attribute), as a broker forwarding ``q`` expects."""

# -- type -----------------------------------------------------------------------------------------

_TYPE_TOKEN = re.compile(r"\s*(?:(?P<punct>[(),;|])|(?P<name>[^\s(),;|]+))")
MAX_TYPE_CHARS = 2000


def type_selected(selection: str, types: frozenset[str] = NOISE_TYPES) -> bool:
    """Whether an entity of ``types`` matches the Entity Type Selection ``selection`` (CIM 009 §4.17).

    ``,`` and ``|`` are or, ``;`` is and (binding tighter, as in ``q``), parentheses group.
    A plain ``type=A,B`` list is the common case of it; a broker may forward ``A|B`` too.
    """
    if len(selection) > MAX_TYPE_CHARS:
        raise bad("Invalid type selection", f"longer than {MAX_TYPE_CHARS} characters")
    toks: list[tuple[str, str]] = []
    pos = 0
    while selection[pos:].strip():
        m = _TYPE_TOKEN.match(selection, pos)
        if not m:  # unreachable: every character is a delimiter, a space or part of a name
            raise bad("Invalid type selection", f"cannot read {selection[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        toks.append((kind, m.group(kind)))
        pos = m.end()
    i = 0

    def peek() -> tuple[str, str] | None:
        return toks[i] if i < len(toks) else None

    def disjunction(depth: int) -> bool:
        nonlocal i
        result = conjunction(depth)
        while peek() in (("punct", ","), ("punct", "|")):
            i += 1
            result = conjunction(depth) or result
        return result

    def conjunction(depth: int) -> bool:
        nonlocal i
        result = term(depth)
        while peek() == ("punct", ";"):
            i += 1
            result = term(depth) and result
        return result

    def term(depth: int) -> bool:
        nonlocal i
        tok = peek()
        if tok == ("punct", "(") and depth < MAX_Q_DEPTH:
            i += 1
            inner = disjunction(depth + 1)
            if peek() != ("punct", ")"):
                raise bad("Invalid type selection", f"missing ')' in {selection!r}")
            i += 1
            return inner
        if tok is None or tok[0] != "name":
            raise bad("Invalid type selection", f"expected a type name in {selection!r}, got {tok[1] if tok else 'end'!r}")
        i += 1
        return tok[1] in types

    if not toks:
        raise bad("Invalid type selection", "empty")
    matched = disjunction(0)
    if i != len(toks):
        raise bad("Invalid type selection", f"unexpected {toks[i][1]!r} in {selection!r}")
    return matched

# -- q ------------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<op>==|!=|>=|<=|>|<)|(?P<punct>[;|()])|(?P<str>"(?:[^"\\]|\\.)*")|(?P<word>[^\s;|()=!<>"]+))')


@dataclass(frozen=True)
class Column:
    """How an attribute reads in SQL: expression, value kind and rounding (as published)."""

    expr: sql.Composable
    kind: str  # "number" | "text" | "datetime"


def _tokens(q: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(q):
        if q[pos:].strip() == "":
            break
        m = _TOKEN.match(q, pos)
        if not m or m.end() == pos:
            raise bad("Invalid q expression", f"cannot read {q[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _QParser:
    """Recursive descent over ``or := and ('|' and)*``, ``and := atom (';' atom)*``."""

    def __init__(self, q: str, columns: Mapping[str, Column]) -> None:
        self.toks = _tokens(q)
        self.i = 0
        self.columns = columns
        self.params: list[Any] = []

    def parse(self) -> sql.Composable:
        if not self.toks:
            raise bad("Invalid q expression", "empty")
        expr = self._or()
        if self.i != len(self.toks):
            raise bad("Invalid q expression", f"unexpected {self.toks[self.i][1]!r}")
        return expr

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _or(self) -> sql.Composable:
        parts = [self._and()]
        while (t := self._peek()) and t == ("punct", "|"):
            self.i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else sql.SQL("(") + sql.SQL(" OR ").join(parts) + sql.SQL(")")

    def _and(self) -> sql.Composable:
        parts = [self._atom()]
        while (t := self._peek()) and t == ("punct", ";"):
            self.i += 1
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else sql.SQL("(") + sql.SQL(" AND ").join(parts) + sql.SQL(")")

    def _atom(self) -> sql.Composable:
        t = self._peek()
        if t == ("punct", "("):
            self.i += 1
            inner = self._or()
            if self._peek() != ("punct", ")"):
                raise bad("Invalid q expression", "missing ')'")
            self.i += 1
            return inner
        if t is None or t[0] != "word":
            raise bad("Invalid q expression", f"expected an attribute name, got {t[1] if t else 'end'!r}")
        self.i += 1
        name = compact(t[1])
        column = self.columns.get(name)
        if column is None and name in PUBLISHED_ATTRS:
            raise bad("Attribute not queryable in q", f"{name!r} (queryable: {', '.join(sorted(self.columns))})")
        op = self._peek()
        if op is None or op[0] != "op":
            return sql.SQL("false") if column is None else sql.SQL("({} IS NOT NULL)").format(column.expr)
        self.i += 1
        value = self._peek()
        if value is None or value[0] not in ("word", "str"):
            raise bad("Invalid q expression", f"{name}{op[1]} needs a value")
        self.i += 1
        if column is None:  # no NoiseLevelObserved has it: the term is false (CIM 009 §4.9), not an error
            return sql.SQL("false")
        return self._compare(name, column, op[1], value)

    def _value(self, name: str, column: Column, raw: str, quoted: bool) -> Any:
        if quoted:
            raw = json.loads(raw)
        if column.kind == "number":
            try:
                v = float(raw)
            except ValueError as exc:
                raise bad("Invalid q value", f"{name} compares to numbers, not {raw!r}") from exc
            if not math.isfinite(v):
                raise bad("Invalid q value", f"{name}: {raw!r}")
            return v
        if column.kind == "datetime":
            return parse_time(raw, name)
        return raw

    def _compare(self, name: str, column: Column, op: str, tok: tuple[str, str]) -> sql.Composable:
        kind, raw = tok
        quoted = kind == "str"
        if not quoted and ".." in raw:
            if op not in ("==", "!="):
                raise bad("Invalid q expression", "a range needs == or !=")
            lo, hi = (self._value(name, column, part, False) for part in raw.split("..", 1))
            self.params += [lo, hi]
            between = sql.SQL("({} BETWEEN %s AND %s)").format(column.expr)
            return between if op == "==" else sql.SQL("(NOT ") + between + sql.SQL(")")
        if not quoted and "," in raw:
            if op not in ("==", "!="):
                raise bad("Invalid q expression", "a list needs == or !=")
            values = [self._value(name, column, part, part.startswith('"')) for part in raw.split(",")]
            self.params.append(values)
            return sql.SQL("({} {} ANY(%s))").format(column.expr, sql.SQL("=" if op == "==" else "<>"))
        self.params.append(self._value(name, column, raw, quoted))
        sql_op = {"==": "=", "!=": "<>"}.get(op, op)
        return sql.SQL("({} {} %s)").format(column.expr, sql.SQL(sql_op))


MAX_Q_CHARS = 2000
MAX_Q_DEPTH = 16
MAX_COORDINATES_CHARS = 20_000


def compile_q(q: str, columns: Mapping[str, Column]) -> tuple[sql.Composable, list[Any]]:
    """``q`` -> (SQL boolean expression, parameters) over ``columns``.

    Bounded before parsing: the parser recurses per parenthesis, and 2 000 of them
    overflowed Python's stack (a 500 instead of a 400).
    """
    if len(q) > MAX_Q_CHARS:
        raise bad("Invalid q expression", f"longer than {MAX_Q_CHARS} characters")
    depth = deepest = 0
    for ch in q:
        depth += (ch == "(") - (ch == ")")
        deepest = max(deepest, depth)
    if deepest > MAX_Q_DEPTH:
        raise bad("Invalid q expression", f"nested deeper than {MAX_Q_DEPTH} parentheses")
    parser = _QParser(q, columns)
    expr = parser.parse()
    return expr, parser.params


# -- time ---------------------------------------------------------------------------------------


def parse_time(raw: str, what: str) -> datetime:
    try:
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad("Invalid date-time", f"{what}: {raw!r} is not ISO 8601") from exc
    if ts.tzinfo is None:
        raise bad("Invalid date-time", f"{what}: {raw!r} has no time zone (use Z or an offset)")
    return ts


@dataclass(frozen=True)
class TimeRange:
    """A half-open or closed range on ``observedAt`` (bucket start)."""

    after: datetime | None = None  # strict >
    since: datetime | None = None  # >=
    before: datetime | None = None  # strict <


def parse_timerel(timerel: str | None, time_at: str | None, end_time_at: str | None, timeproperty: str | None) -> TimeRange:
    if timeproperty not in (None, "observedAt"):
        raise bad("Unsupported timeproperty", "only observedAt (the start of each aggregation period) is served")
    if timerel is None:
        if time_at or end_time_at:
            raise bad("timeAt without timerel")
        return TimeRange()
    if time_at is None:
        raise bad("timerel needs timeAt")
    at = parse_time(time_at, "timeAt")
    if timerel == "before":
        return TimeRange(before=at)
    if timerel == "after":
        return TimeRange(after=at)
    if timerel == "between":
        if end_time_at is None:
            raise bad("timerel=between needs endTimeAt")
        end = parse_time(end_time_at, "endTimeAt")
        if end <= at:
            raise bad("endTimeAt must be after timeAt")
        return TimeRange(since=at, before=end)
    raise bad("Invalid timerel", f"{timerel!r}: use before, after or between")


# -- geo ----------------------------------------------------------------------------------------


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def _in_ring(lon: float, lat: float, ring: list[list[float]]) -> bool:
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        if (y1 > lat) != (y2 > lat) and lon < (x2 - x1) * (lat - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def _in_polygon(lon: float, lat: float, rings: list[list[list[float]]]) -> bool:
    return _in_ring(lon, lat, rings[0]) and not any(_in_ring(lon, lat, hole) for hole in rings[1:])


@dataclass(frozen=True)
class GeoQuery:
    georel: str
    geometry: str
    coordinates: Any
    max_distance: float | None = None
    min_distance: float | None = None

    def matches(self, lat: float, lon: float) -> bool:
        if self.georel == "near":
            plon, plat = self.coordinates
            d = haversine_m(lat, lon, plat, plon)
            return (self.max_distance is None or d <= self.max_distance) and (self.min_distance is None or d >= self.min_distance)
        if self.georel == "equals" and self.geometry != "Point":
            return False  # the locations are Points: none equals a (Multi)Polygon, whatever it contains
        if self.geometry == "Point":
            same = math.isclose(lon, self.coordinates[0], abs_tol=1e-9) and math.isclose(lat, self.coordinates[1], abs_tol=1e-9)
            hit = same
        else:
            polygons = [self.coordinates] if self.geometry == "Polygon" else self.coordinates
            hit = any(_in_polygon(lon, lat, poly) for poly in polygons)
        return not hit if self.georel == "disjoint" else hit


def parse_geo(georel: str | None, geometry: str | None, coordinates: str | None, geoproperty: str | None) -> GeoQuery | None:
    if georel is None:
        if geometry or coordinates:
            raise bad("geometry/coordinates without georel")
        return None
    if geoproperty not in (None, "location") and compact(geoproperty or "") != "location":
        raise bad("Unsupported geoproperty", "only location is served")
    if geometry is None or coordinates is None:
        raise bad("georel needs geometry and coordinates")
    if len(coordinates) > MAX_COORDINATES_CHARS:
        raise bad("Invalid coordinates", f"longer than {MAX_COORDINATES_CHARS} characters")
    try:
        coords = json.loads(coordinates)
    except (ValueError, RecursionError) as exc:
        raise bad("Invalid coordinates", "coordinates must be a JSON array") from exc
    rel, *mods = georel.split(";")
    if rel == "near":
        if geometry != "Point" or not _is_point(coords):
            raise bad("near needs geometry=Point and coordinates=[lon,lat]")
        dist: dict[str, float] = {}
        for mod in mods:
            key, sep, val = mod.partition("==")
            if key not in ("maxDistance", "minDistance") or not sep:
                raise bad("Invalid georel", f"{mod!r}: use maxDistance==<m> or minDistance==<m>")
            try:
                dist[key] = float(val)
            except ValueError as exc:
                raise bad("Invalid georel", f"{key} must be a number of metres") from exc
        if not dist:
            raise bad("near needs maxDistance or minDistance")
        return GeoQuery("near", geometry, coords, dist.get("maxDistance"), dist.get("minDistance"))
    if rel in ("within", "intersects", "disjoint", "equals"):
        if mods:
            raise bad("Invalid georel", f"{rel} takes no modifier")
        if geometry == "Point" and _is_point(coords) and rel in ("intersects", "disjoint", "equals"):
            return GeoQuery(rel, geometry, coords)
        if geometry == "Polygon" and _is_polygon(coords):
            return GeoQuery("within" if rel == "intersects" else rel, geometry, coords)
        if geometry == "MultiPolygon" and isinstance(coords, list) and all(_is_polygon(p) for p in coords):
            return GeoQuery("within" if rel == "intersects" else rel, geometry, coords)
        raise bad("Invalid geometry", f"{rel} with {geometry} and these coordinates is not supported")
    raise bad("Invalid georel", f"{rel!r}: use near, within, intersects, disjoint or equals")


def _is_point(c: Any) -> bool:
    """[longitude, latitude], finite and on the globe (1e400 parses as inf and broke the distance maths: 500)."""
    return (isinstance(c, list) and len(c) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in c)
            and -180 <= c[0] <= 180 and -90 <= c[1] <= 90)


def _is_polygon(c: Any) -> bool:
    return isinstance(c, list) and bool(c) and all(isinstance(r, list) and len(r) >= 4 and all(_is_point(p) for p in r) for r in c)
