"""A Saint-Étienne-sized neighbourhood: 40 sensors on five streets and a square.

Positions follow real streets around Place Jean-Jaurès (approximate, WGS84), so maps
look like a city and multilateration works on a realistic geometry. The frame
generator produces plausible 1 s level frames without audio (traffic that follows
the time of day, passing horns and sirens) for the sensors not running a real edge
agent in the demo. Deterministic for a given seed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from messages.bands import BAND_KEYS, NOMINAL_CENTRES_HZ

# (street/place, start (lat, lon), end (lat, lon), sensor count)
_STREETS: tuple[tuple[str, tuple[float, float], tuple[float, float], int], ...] = (
    ("Place Jean-Jaurès", (45.44030, 4.38640), (45.44100, 4.38800), 8),
    ("Rue de la République", (45.43890, 4.38650), (45.43820, 4.39250), 8),
    ("Grande Rue (Rue Gambetta)", (45.43950, 4.38550), (45.43370, 4.38700), 6),
    ("Rue Michelet", (45.44050, 4.38300), (45.43500, 4.38350), 6),
    ("Avenue de la Libération", (45.43700, 4.38900), (45.43550, 4.39600), 6),
    ("Rue Saint-Jean", (45.44250, 4.38700), (45.44130, 4.39100), 6),
)


@dataclass(frozen=True)
class SimSensor:
    sensor_id: str
    name: str
    latitude: float
    longitude: float
    place: str
    sonometer_class: int
    base_laeq: float


def sensors(count: int = 40) -> list[SimSensor]:
    """The neighbourhood's sensors (``count`` <= 40 takes the first ones, street by street)."""
    out: list[SimSensor] = []
    for s_idx, (place, (la0, lo0), (la1, lo1), n) in enumerate(_STREETS):
        for i in range(n):
            f = (i + 0.5) / n
            slug = "".join(ch if ch.isalnum() else "-" for ch in place.lower().split("(")[0].strip())
            slug = "-".join(p for p in slug.split("-") if p)[:24]
            out.append(
                SimSensor(
                    sensor_id=f"ste-{s_idx + 1:02d}-{i + 1:02d}",
                    name=f"{place} #{i + 1}",
                    latitude=round(la0 + f * (la1 - la0), 6),
                    longitude=round(lo0 + f * (lo1 - lo0), 6),
                    place=place,
                    sonometer_class=1 if i == 0 else 2,
                    base_laeq=62.0 if "Place" not in place else 58.0,
                )
            )
    return out[:count]


def _traffic_offset_db(local_hour: float) -> float:
    """Diurnal traffic: quiet at 4 h, busy 8-19 h (about 15 dB swing)."""
    return -9.0 + 9.0 * (0.5 - 0.5 * math.cos(2 * math.pi * (local_hour - 4.0) / 24.0)) * 2 - 3.0


def _spectrum_shape() -> np.ndarray:
    """Relative band levels of road traffic noise (peaks near 1 kHz, rolls off above)."""
    f = np.asarray(NOMINAL_CENTRES_HZ)
    return -6.0 * np.log2(np.maximum(f, 63) / 1000.0) ** 2 / 4.0 - 8.0


def frames(sensor: SimSensor, start: datetime, seconds: int, seed: int = 0, max_band_hz: float = 20000.0) -> list[dict]:
    """JSON-ready level frames (the wire shape of ``messages.level_frame``), one per second."""
    rng = np.random.default_rng([zlib.crc32(sensor.sensor_id.encode()), seed])
    shape = _spectrum_shape()
    keys = [k for k, f in zip(BAND_KEYS, NOMINAL_CENTRES_HZ) if f <= max_band_hz]
    out = []
    start = start.astimezone(timezone.utc)
    level = sensor.base_laeq
    for s in range(seconds):
        t = start + timedelta(seconds=s)
        hour = (t.hour + 1 + t.minute / 60) % 24  # ~ Europe/Paris winter time
        target = sensor.base_laeq + _traffic_offset_db(hour)
        level += 0.15 * (target - level) + rng.normal(0, 1.2)
        passby = rng.random() < 0.04
        laeq = float(np.clip(level + (8.0 if passby else 0.0), 25, 120))
        horn = int(rng.random() < 0.004)
        siren = int(rng.random() < 0.0008)
        if horn or siren:
            laeq = min(laeq + 10.0, 120.0)
        bands = {k: round(float(np.clip(laeq + shape[i] + rng.normal(0, 1.0), 5, 130)), 1) for i, k in enumerate(keys)}
        out.append(
            {
                "schema": "sonopolis.level-frame/1",
                "sensor_id": sensor.sensor_id,
                "time": t.isoformat().replace("+00:00", "Z"),
                "period_s": 1.0,
                "laeq": round(laeq, 1),
                "lafmax": round(laeq + abs(rng.normal(3, 1)), 1),
                "lafmin": round(max(laeq - abs(rng.normal(4, 1)), 0.0), 1),
                "lcpeak": round(laeq + 20 + abs(rng.normal(5, 2)), 1),
                "bands": bands,
                "status": "ok",
                "sources": {"car_horn": horn, "siren": siren},
            }
        )
    return out
