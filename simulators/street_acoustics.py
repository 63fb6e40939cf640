"""Render what each microphone hears when a sound happens somewhere in the street.

Each placed sound reaches a sensor after ``distance / c`` seconds (c from the air
temperature) and weaker by spherical spreading (20·log10(d / 10 m)). That is enough
physics for the demo and the system tests: several sensors hear the same gunshot
with realistic time differences, so the bridge's TDOA localisation has real work.
Everything stays in memory (float32 arrays); nothing is ever written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EARTH_RADIUS_M = 6_371_008.8


def speed_of_sound(temperature_c: float) -> float:
    return 331.3 * math.sqrt(1.0 + temperature_c / 273.15)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance: exact to millimetres over a neighbourhood."""
    phi = math.radians((lat1 + lat2) / 2)
    dx = math.radians(lon2 - lon1) * math.cos(phi) * EARTH_RADIUS_M
    dy = math.radians(lat2 - lat1) * EARTH_RADIUS_M
    return math.hypot(dx, dy)


@dataclass(frozen=True)
class PlacedSound:
    """A sound emitted at a place and time (seconds from the start of the scene)."""

    label: str
    waveform: np.ndarray
    latitude: float
    longitude: float
    emission_s: float
    level_at_10m_db: float
    """Leq (Z) of the waveform's loud part, as heard 10 m away."""


def _loud_part_ms(x: np.ndarray, fs: int) -> float:
    """Mean square over the loudest 100 ms, so short impulses get a sensible level."""
    win = max(1, int(0.1 * fs))
    power = np.convolve(x.astype(np.float64) ** 2, np.ones(win) / win, mode="valid") if len(x) > win else np.array([np.mean(x**2)])
    return float(power.max())


def add_sounds(
    base: np.ndarray,
    fs: int,
    sensor_lat: float,
    sensor_lon: float,
    sounds: list[PlacedSound],
    offset_db: float,
    temperature_c: float = 15.0,
) -> list[tuple[str, float, float]]:
    """Mix ``sounds`` into ``base`` (in place); return (label, arrival_s, level_db) per sound heard.

    ``offset_db`` is the microphone calibration: level = 10·log10(mean square) + offset.
    """
    c = speed_of_sound(temperature_c)
    heard = []
    for s in sounds:
        d = max(distance_m(s.latitude, s.longitude, sensor_lat, sensor_lon), 1.0)
        arrival = s.emission_s + d / c
        level = s.level_at_10m_db - 20 * math.log10(d / 10.0)
        ms = _loud_part_ms(s.waveform, fs)
        if ms <= 0:
            continue
        gain = math.sqrt(10 ** ((level - offset_db) / 10) / ms)
        i0 = int(round(arrival * fs))
        if i0 >= len(base):
            continue
        seg = s.waveform[: len(base) - i0] * gain
        base[i0 : i0 + len(seg)] += seg.astype(base.dtype)
        heard.append((s.label, arrival, level))
    np.clip(base, -1.0, 1.0, out=base)
    return heard
