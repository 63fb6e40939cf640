"""Read queries of the open API over the smart relations (parameterised SQL only).

Pagination is keyset-based: the cursor carries the last ``(time, sensor_id)`` seen, so
page N costs the same as page 1 and rows inserted meanwhile never shift a page. The
cursor is opaque to clients (URL-safe base64 of a small JSON object).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from api import precision
from api.errors import BadRequest
from api.models import PERIOD_RELATION, Period
from messages.bands import BAND_KEYS
from messages.topics import SENSOR_ID_PATTERN

LEVEL_COLUMNS = ("laeq", "lamax", "lamin", "la10", "la50", "la90", "coverage", "n_seconds", "car_horn", "siren")


MAX_CURSOR_CHARS = 512


@dataclass(frozen=True)
class Cursor:
    at: str
    sensor_id: str

    def encode(self) -> str:
        raw = json.dumps({"t": self.at, "s": self.sensor_id}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        if len(text) > MAX_CURSOR_CHARS:  # ours are ~80; a deeply nested forged one overflowed json's recursion (500)
            raise BadRequest("cursor is not valid: pass back the `next` link of the previous page unchanged")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data = json.loads(raw)
            cursor = cls(at=str(data["t"]), sensor_id=str(data["s"]))
            dt.datetime.fromisoformat(cursor.at) if "T" in cursor.at else dt.date.fromisoformat(cursor.at)
            # The id goes into a query: only what a sensor id can be (a NUL or a lone
            # surrogate from a forged cursor reached PostgreSQL and answered 500).
            if not re.fullmatch(SENSOR_ID_PATTERN, cursor.sensor_id):
                raise ValueError("not a sensor id")
            return cursor
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest("cursor is not valid: pass back the `next` link of the previous page unchanged") from exc


def bands_dict(values: list[float | None] | None) -> dict[str, float] | None:
    if values is None:
        return None
    return {BAND_KEYS[i]: round(float(v), precision.LEVEL_DECIMALS) for i, v in enumerate(values[: len(BAND_KEYS)]) if v is not None}


class Queries:
    """All reads of the API, bound to one schema (``smart`` by default)."""

    def __init__(self, schema: str = "smart"):
        self.schema = sql.Identifier(schema)

    def _rel(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self.schema, sql.Identifier(name))

    async def sensors(self, conn: AsyncConnection, sensor_id: str | None = None) -> list[dict[str, Any]]:
        where = sql.SQL("WHERE sensor_id = %s") if sensor_id else sql.SQL("")
        q = sql.SQL(
            "SELECT sensor_id, name, latitude, longitude, street, place, sonometer_class, installed_on, timezone, active"
            " FROM {} {} ORDER BY sensor_id"
        ).format(self._rel("sensors"), where)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(q, (sensor_id,) if sensor_id else ())
            return await cur.fetchall()

    async def sensor_exists(self, conn: AsyncConnection, sensor_id: str) -> bool:
        cur = await conn.execute(sql.SQL("SELECT 1 FROM {} WHERE sensor_id = %s").format(self._rel("sensors")), (sensor_id,))
        return await cur.fetchone() is not None

    async def levels(
        self, conn: AsyncConnection, period: Period, sensors: list[str] | None, start: dt.datetime | None,
        end: dt.datetime | None, limit: int, cursor: Cursor | None, with_bands: bool,
    ) -> list[dict[str, Any]]:
        """Rows of one aggregate relation ordered by (bucket, sensor_id); ``limit + 1`` fetched to detect a next page."""
        cols = [sql.Identifier(c) for c in ("sensor_id", "bucket", *LEVEL_COLUMNS)]
        if with_bands:
            cols.append(sql.Identifier("bands"))
        conds, params = self._filters("bucket", sensors, start, end, cursor)
        q = sql.SQL("SELECT {} FROM {} {} ORDER BY bucket, sensor_id LIMIT %s").format(
            sql.SQL(", ").join(cols), self._rel(PERIOD_RELATION[period]), conds)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(q, (*params, limit + 1))
            rows = await cur.fetchall()
        for r in rows:
            r["period"] = period
            if with_bands:
                r["bands"] = bands_dict(r["bands"])
        return rows

    async def lden(self, conn: AsyncConnection, sensors: list[str] | None, start: dt.date | None, end: dt.date | None,
                   limit: int, cursor: Cursor | None) -> list[dict[str, Any]]:
        conds, params = self._filters("day", sensors, start, end, cursor)
        q = sql.SQL("SELECT sensor_id, day, lden, lday, levening, lnight, coverage FROM {} {} ORDER BY day, sensor_id LIMIT %s").format(
            self._rel("lden_daily"), conds)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(q, (*params, limit + 1))
            return await cur.fetchall()

    async def source_counts(self, conn: AsyncConnection, sensors: list[str] | None, start: dt.datetime | None,
                            end: dt.datetime | None, limit: int, cursor: Cursor | None) -> list[dict[str, Any]]:
        conds, params = self._filters("bucket", sensors, start, end, cursor)
        q = sql.SQL(
            "SELECT sensor_id, bucket AS hour, coalesce(car_horn, 0) AS car_horn, coalesce(siren, 0) AS siren"
            " FROM {} {} ORDER BY bucket, sensor_id LIMIT %s").format(self._rel("levels_1h"), conds)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(q, (*params, limit + 1))
            return await cur.fetchall()

    async def latest(self, conn: AsyncConnection, since: dt.datetime) -> list[dict[str, Any]]:
        """Most recent 1-minute LAeq of each sensor since ``since`` (the map's colours)."""
        q = sql.SQL(
            "SELECT DISTINCT ON (sensor_id) sensor_id, bucket, laeq FROM {} WHERE bucket >= %s ORDER BY sensor_id, bucket DESC"
        ).format(self._rel("levels_1min"))
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(q, (since,))
            return await cur.fetchall()

    @staticmethod
    def _filters(time_col: str, sensors: list[str] | None, start: Any, end: Any, cursor: Cursor | None) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        col = sql.Identifier(time_col)
        if sensors:
            parts.append(sql.SQL("sensor_id = ANY(%s)"))
            params.append(list(sensors))
        if start is not None:
            parts.append(sql.SQL("{} >= %s").format(col))
            params.append(start)
        if end is not None:
            parts.append(sql.SQL("{} < %s").format(col))
            params.append(end)
        if cursor is not None:
            parts.append(sql.SQL("({}, sensor_id) > (%s, %s)").format(col))
            at: Any = dt.datetime.fromisoformat(cursor.at) if "T" in cursor.at else dt.date.fromisoformat(cursor.at)
            params += [at, cursor.sensor_id]
        if not parts:
            return sql.SQL(""), params
        return sql.SQL("WHERE ") + sql.SQL(" AND ").join(parts), params
