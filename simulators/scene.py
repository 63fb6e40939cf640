"""Synthetic street scenes for the demo, tests and benchmarks (deterministic per seed).

A scene is background traffic (low-pass-shaped noise whose level swells as cars
pass) plus scheduled events: car horns (two detuned harmonic tones), sirens (a
wailing sweep), impulses (a gunshot-like crack: fast attack, ~60 ms decay), glass
breaks (bright decaying partials) and hiss. Every sound is scaled to a given
sound pressure level through a virtual microphone: ``SCENE_OFFSET_DB`` is the
calibration offset of that microphone (level = 10*log10(mean square) + offset), so
the meter reading a scene with that offset reads the scheduled levels back.

Nothing here is real audio of people: it is arithmetic, and it stays in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

SCENE_OFFSET_DB = 130.0
"""Virtual microphone: a full-scale square wave reads 130 dB SPL (typical MEMS AOP)."""

KINDS = ("car_horn", "siren", "impulse", "glass", "hiss")


@dataclass(frozen=True)
class SceneEvent:
    kind: str
    onset_s: float
    duration_s: float
    level_db: float  # Leq (Z) of the event alone over its duration, dB SPL


@dataclass
class Scene:
    sample_rate: int
    audio: np.ndarray
    events: list[SceneEvent] = field(default_factory=list)
    background_db: float = 0.0


def _scale(x: np.ndarray, level_db: float, offset_db: float) -> np.ndarray:
    ms = float(np.mean(x * x))
    return x * math.sqrt(10 ** ((level_db - offset_db) / 10) / ms) if ms > 0 else x


def _traffic(n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    sos = signal.butter(2, [40, 2500], btype="bandpass", fs=fs, output="sos")
    noise = signal.sosfilt(sos, white) + 0.05 * white  # a little broadband tyre noise
    t = np.arange(n) / fs
    swell = np.ones(n)
    for _ in range(max(1, int(n / fs / 6))):  # a car every ~6 s
        centre = rng.uniform(0, n / fs)
        width = rng.uniform(1.5, 4.0)
        swell += rng.uniform(1.0, 4.0) * np.exp(-(((t - centre) / width) ** 2))
    return noise * np.sqrt(swell)


def _event(kind: str, n: int, fs: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / fs
    if kind == "car_horn":
        f0 = rng.uniform(380, 440)
        tone = sum(np.sin(2 * np.pi * k * f * t) / k for f in (f0, f0 * 1.26) for k in (1, 2, 3, 4))
        env = np.minimum(1, t / 0.01) * np.minimum(1, (t[-1] - t) / 0.02 + 1e-9)
        return tone * env
    if kind == "siren":
        f = 950 + 400 * np.sin(2 * np.pi * 0.25 * t)
        phase = 2 * np.pi * np.cumsum(f) / fs
        return np.sin(phase) + 0.3 * np.sin(2 * phase)
    if kind == "impulse":
        env = np.exp(-t / 0.06) * np.minimum(1, t / 0.0005)
        return rng.standard_normal(n) * env
    if kind == "glass":
        parts = sum(np.sin(2 * np.pi * rng.uniform(2500, 7000) * t + rng.uniform(0, 6.28)) * np.exp(-t / rng.uniform(0.05, 0.3)) for _ in range(12))
        return parts + 0.3 * rng.standard_normal(n) * np.exp(-t / 0.02)
    if kind == "hiss":
        hp = signal.butter(4, min(3000, fs / 2 * 0.8), btype="highpass", fs=fs, output="sos")
        return signal.sosfilt(hp, rng.standard_normal(n))
    raise ValueError(f"unknown scene event kind {kind!r}; expected one of {KINDS}")


def street_scene(
    seconds: float,
    sample_rate: int = 48000,
    seed: int = 0,
    events: list[SceneEvent] | None = None,
    background_db: float = 62.0,
    offset_db: float = SCENE_OFFSET_DB,
) -> Scene:
    """Background traffic at ``background_db`` (Leq, Z) plus ``events``; clipped like an ADC."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    audio = _scale(_traffic(n, sample_rate, rng), background_db, offset_db)
    placed: list[SceneEvent] = []
    for ev in events or []:
        i0 = int(ev.onset_s * sample_rate)
        m = min(int(ev.duration_s * sample_rate), n - i0)
        if i0 < 0 or m <= 0:
            raise ValueError(f"event {ev.kind} at {ev.onset_s} s lies outside the {seconds} s scene")
        audio[i0 : i0 + m] += _scale(_event(ev.kind, m, sample_rate, rng), ev.level_db, offset_db)
        placed.append(ev)
    return Scene(sample_rate, np.clip(audio, -1.0, 1.0).astype(np.float32), placed, background_db)


def calibrator_tone(seconds: float, sample_rate: int, level_db: float = 94.0, offset_db: float = SCENE_OFFSET_DB, noise_db: float | None = 50.0, seed: int = 0) -> np.ndarray:
    """A 1 kHz calibrator on the virtual microphone, with optional ambient noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = _scale(np.sin(2 * np.pi * 1000.0 * t), level_db, offset_db)
    if noise_db is not None:
        tone += _scale(_traffic(t.size, sample_rate, np.random.default_rng(seed)), noise_db, offset_db)
    return tone.astype(np.float32)
