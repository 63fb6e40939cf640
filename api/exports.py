"""Daily open-data exports: fetch a day, pass the quality gate, publish files and metadata.

One run = one dataset x one local day. Steps:

1. refuse a day whose end is more recent than the publication delay (nothing newer
   than ``publication_delay_h`` is ever published);
2. fetch the rows in file order; run the great-expectations gate (``api.quality``);
3. keep the report (``reports/<day>/<dataset>-<run>.json`` and ``api_export_runs``);
4. only if the gate passed: write the CSV atomically, then rebuild
   ``datapackage.json`` (Frictionless) and ``catalog.jsonld`` (DCAT-AP) from the files
   actually published (``api.catalog``).

A rejected batch publishes nothing and leaves an earlier good file of the same day in
place. Re-running a day is idempotent: the same rows give the same file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api import catalog
from api.quality import run_gate
from api.settings import ExportSettings

log = logging.getLogger(__name__)

DAILY_DATASETS = ("levels_15min", "levels_1h", "lden_daily")


class ExportError(Exception):
    """An export could not run (the message says which day/dataset and why)."""


class NotYetPublishable(ExportError):
    """The day ends within the publication delay."""


@dataclass(frozen=True)
class ExportResult:
    run_id: int
    day: dt.date
    dataset: str
    status: str
    rows: int
    file_path: str | None
    report_path: str
    report: dict[str, Any]


def day_bounds(day: dt.date, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """UTC bounds of a local day; an ``ExportError`` for days at the edge of the calendar (year 1, 9999-12-31)."""
    zone = ZoneInfo(tz)
    try:
        start = dt.datetime.combine(day, dt.time(0), zone)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), zone)
        return start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ExportError(f"{day} has no UTC bounds in {tz} (outside the representable dates)") from exc


def check_publishable(day: dt.date, settings: ExportSettings, now: dt.datetime | None = None) -> None:
    _, end = day_bounds(day, settings.timezone)
    now = now or dt.datetime.now(dt.UTC)
    allowed_until = now - dt.timedelta(hours=settings.publication_delay_h)
    if end > allowed_until:
        raise NotYetPublishable(
            f"{day} cannot be published before {(end + dt.timedelta(hours=settings.publication_delay_h)).isoformat()} "
            f"(publication delay {settings.publication_delay_h:g} h)")


class Exporter:
    """Runs exports for one schema into ``settings.directory``."""

    def __init__(self, settings: ExportSettings, schema: str = "smart"):
        self.settings = settings
        self.schema = sql.Identifier(schema)
        self.root = Path(settings.directory)

    def _rel(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self.schema, sql.Identifier(name))

    async def fetch(self, conn: AsyncConnection, dataset: str, day: dt.date) -> tuple[list[dict[str, Any]], int]:
        """Rows of ``dataset`` for local ``day`` in file order, and the number of active sensors."""
        cols = catalog.columns(dataset)
        select = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        async with conn.cursor(row_factory=dict_row) as cur:
            if dataset == "lden_daily":
                await cur.execute(sql.SQL("SELECT {} FROM {} WHERE day = %s ORDER BY sensor_id, day").format(select, self._rel(dataset)), (day,))
            elif dataset in ("levels_15min", "levels_1h"):
                start, end = day_bounds(day, self.settings.timezone)
                await cur.execute(sql.SQL("SELECT {} FROM {} WHERE bucket >= %s AND bucket < %s ORDER BY sensor_id, bucket").format(
                    select, self._rel(dataset)), (start, end))
            else:
                raise ExportError(f"unknown dataset {dataset!r} (one of {', '.join(DAILY_DATASETS)})")
            rows = await cur.fetchall()
            await cur.execute(sql.SQL("SELECT count(*) AS n FROM {} WHERE active").format(self._rel("sensors")))
            n = await cur.fetchone()
        return rows, int(n["n"]) if n else 0

    async def run(self, conn: AsyncConnection, dataset: str, day: dt.date, now: dt.datetime | None = None) -> ExportResult:
        check_publishable(day, self.settings, now)
        rows, expected = await self.fetch(conn, dataset, day)
        frame = pd.DataFrame(rows, columns=list(catalog.columns(dataset)))
        report = await asyncio.to_thread(run_gate, frame, dataset, self.settings, expected)
        report["day"] = day.isoformat()
        status = "published" if report["success"] else "rejected"
        async with conn.cursor() as cur:
            await cur.execute(sql.SQL("INSERT INTO {} (day, dataset, status, rows, report) VALUES (%s, %s, %s, %s, %s) RETURNING id").format(
                self._rel("api_export_runs")), (day, dataset, status, len(frame), Jsonb(report)))
            row = await cur.fetchone()
            assert row is not None
            run_id = int(row[0])
        report_path = self.root / "reports" / day.isoformat() / f"{dataset}-{run_id}.json"
        catalog.atomic_write(report_path, json.dumps(report, indent=2, ensure_ascii=False).encode())
        file_path: Path | None = None
        if report["success"]:
            file_path = self.root / dataset / f"{dataset}_{day.isoformat()}.csv"
            catalog.atomic_write(file_path, catalog.to_csv(dataset, frame).encode())
            await asyncio.to_thread(self.write_sensors_file, await self._sensors(conn))
            await asyncio.to_thread(catalog.write_metadata, self.root, self.settings)
            log.info("export %s %s published: %d rows (run %d)", dataset, day, len(frame), run_id)
        else:
            log.warning("export %s %s rejected by the quality gate (run %d): %s", dataset, day, run_id, ", ".join(report["failed"]))
        await conn.execute(sql.SQL("UPDATE {} SET report_path = %s, file_path = %s WHERE id = %s").format(self._rel("api_export_runs")),
                           (str(report_path), str(file_path) if file_path else None, run_id))
        return ExportResult(run_id, day, dataset, status, len(frame), str(file_path) if file_path else None, str(report_path), report)

    async def _sensors(self, conn: AsyncConnection) -> pd.DataFrame:
        cols = catalog.columns("sensors")
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY sensor_id").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in cols), self._rel("sensors")))
            return pd.DataFrame(await cur.fetchall(), columns=list(cols))

    def write_sensors_file(self, frame: pd.DataFrame) -> None:
        catalog.atomic_write(self.root / "sensors.csv", catalog.to_csv("sensors", frame).encode())

    async def run_day(self, conn: AsyncConnection, day: dt.date, datasets: tuple[str, ...] = DAILY_DATASETS,
                      now: dt.datetime | None = None) -> list[ExportResult]:
        return [await self.run(conn, ds, day, now) for ds in datasets]


async def list_runs(conn: AsyncConnection, schema: str, limit: int = 100, status: str | None = None) -> list[dict[str, Any]]:
    rel = sql.SQL("{}.api_export_runs").format(sql.Identifier(schema))
    where = sql.SQL("WHERE status = %s") if status else sql.SQL("")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL("SELECT id, day, dataset, status, rows, started_at, report, file_path FROM {} {} ORDER BY id DESC LIMIT %s").format(
            rel, where), ((status, limit) if status else (limit,)))
        return await cur.fetchall()


async def get_run(conn: AsyncConnection, schema: str, run_id: int) -> dict[str, Any] | None:
    rel = sql.SQL("{}.api_export_runs").format(sql.Identifier(schema))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql.SQL("SELECT id, day, dataset, status, rows, started_at, report, file_path FROM {} WHERE id = %s").format(rel), (run_id,))
        return await cur.fetchone()
