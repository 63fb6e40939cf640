"""Transparency notice (JSON + fr/en page) and the built-in page rendered by headless Chromium."""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import httpx
import psycopg
import pytest

from api.settings import ApiSettings
from tests.api.server import running_api

pytestmark = pytest.mark.anyio


async def test_transparency_json_lists_every_sensor_and_commitments(client: httpx.AsyncClient, smart_dsn: str, settings: ApiSettings) -> None:
    body = (await client.get("/v1/transparency", params={"lang": "en"})).json()
    assert [s["sensor_id"] for s in body["sensors"]] == ["se-chavanelle", "se-fourneyron", "se-jacquard"]
    text = " ".join(body["does_not"]).lower()
    assert "no recording" in text and "no listening" in text and "speech" in text
    assert body["controller"] == settings.transparency.controller and body["contact_email"] == settings.transparency.contact_email
    assert body["retention_days"] == {"levels_1s": settings.transparency.raw_retention_days,
                                      "aggregates": settings.transparency.aggregate_retention_days}
    assert body["purposes"] and "CNIL" in body["rights"] and body["legal_basis"]


async def test_transparency_page_in_french_and_english(client: httpx.AsyncClient, smart_dsn: str) -> None:
    fr = await client.get("/transparency")
    assert fr.status_code == 200 and fr.headers["content-type"].startswith("text/html")
    assert '<html lang="fr">' in fr.text and "Aucun enregistrement" in fr.text and "Place Jacquard" in fr.text
    en = await client.get("/transparency", params={"lang": "en"})
    assert '<html lang="en">' in en.text and "No recording" in en.text and "se-fourneyron" in en.text
    assert (await client.get("/transparency", params={"lang": "de"})).status_code == 422


def _png_is_not_blank(path: Path) -> int:
    """Number of distinct colours in an 8-bit RGB(A) PNG (decoded with zlib; no imaging library needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    bpp = {2: 3, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = width * bpp
    colours: set[bytes] = set()
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 4 == 0:
            colours.update(bytes(line[x:x + 3]) for x in range(0, stride, bpp * 4))
        prev = line
    return len(colours)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run scripts/ensure_test_packages.sh (apt-get install -y chromium)", pytrace=False)
    return exe


def test_builtin_page_renders_map_and_charts_in_chromium(recent_dsn: str, settings: ApiSettings, tmp_path: Path, artifacts: Path) -> None:
    exe = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=15000", "--window-size=1280,900"]
    with running_api(settings, recent_dsn) as base:
        dom = subprocess.run([exe, *flags, "--dump-dom", base + "/"], capture_output=True, text=True, timeout=120)
        shot = artifacts / "builtin_page.png"
        shot.unlink(missing_ok=True)
        subprocess.run([exe, *flags, f"--screenshot={shot}", base + "/"], capture_output=True, text=True, timeout=120)
    html = dom.stdout
    assert 'data-rendered="ok"' in html, dom.stderr[-2000:]
    # the map: one coloured circle per sensor, coloured by its current LAeq
    circles = re.findall(r'<circle[^>]*class="sensor[^"]*"[^>]*>', html)
    assert len(circles) == 3
    assert all(re.search(r'data-laeq="\d+\.\d"', c) for c in circles)
    assert all('fill="#bbb"' not in c for c in circles), "every sensor has a current level"
    # the charts: LAeq and LA90 polylines of the last 24 h, hourly bars for every sensor
    assert re.search(r'id="chart"[^>]*data-points="(\d+)"', html) and int(re.search(r'data-points="(\d+)"', html).group(1)) >= 20
    assert len(re.findall(r'<polyline[^>]*class="series"', html)) == 2
    assert re.search(r'id="bars"[^>]*data-bars="3"', html)
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert _png_is_not_blank(shot) > 8, "the screenshot is blank"


def test_builtin_page_bars_weight_each_hour_by_its_measured_duration(smart_dsn: str, settings: ApiSettings, tmp_path: Path) -> None:
    """1 h at 60 dB and, the next hour, 36 s at 80 dB: the 24 h bar is 63.0 dB (3,636 s measured), not 77.0."""
    exe = _chromium()
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(smart_dsn) as conn:
        for start, level, coverage, seconds in ((hour - dt.timedelta(hours=3), 60.0, 1.0, 3600), (hour - dt.timedelta(hours=2), 80.0, 0.01, 36)):
            conn.execute(
                "INSERT INTO smart.levels_1h (sensor_id, bucket, laeq, lamax, lamin, la10, la50, la90, bands, coverage, n_seconds,"
                " car_horn, siren) VALUES ('se-jacquard', %s, %s, %s, %s, %s, %s, %s, NULL, %s, %s, 0, 0)",
                (start, level, level, level, level, level, level, coverage, seconds),
            )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=15000", "--window-size=1280,900"]
    with running_api(settings, smart_dsn) as base:
        dom = subprocess.run([exe, *flags, "--dump-dom", base + "/"], capture_output=True, text=True, timeout=120)
    html = dom.stdout
    assert 'data-rendered="ok"' in html, dom.stderr[-2000:]
    bars = re.findall(r'<rect[^>]*class="bar"[^>]*>', html)
    assert len(bars) == 1 and 'data-sensor="se-jacquard"' in bars[0]
    assert re.findall(r"se-jacquard: [\d.]+ dB\(A\)", html) == ["se-jacquard: 63.0 dB(A)"]  # the bar's tooltip
    expected = 10 * math.log10((3600 * 10**6 + 36 * 10**8) / 3636)  # 62.97
    assert re.search(r'data-laeq="([\d.]+)"', bars[0]).group(1) == f"{expected:.2f}"  # type: ignore[union-attr]
