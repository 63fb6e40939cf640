"""Synthetic spray-can ("bombe de tag") sounds, from the physics of the can.

No real recording of a spray can exists in the training data, so the class is
synthesised. A spray can makes two sounds:

* **the rattle** while it is shaken: the mixing ball (a steel or glass bead) hits the
  ends of the can 4-12 times a second; each hit excites the thin-walled can, whose
  modes ring at a few kHz and die out within a few milliseconds;
* **the hiss** while it sprays: turbulent flow of propellant and paint through the
  nozzle, a broadband noise with a spectral bump around 3-7 kHz, starting within
  tens of milliseconds and sagging slightly as the pressure drops; taggers spray in
  bursts of 0.3-2 s.

A clip is rattle only, hiss only, rattle then hiss, or hiss bursts. The parameters
are drawn from a seeded generator, so the data set is reproducible. The model card
says the class is synthetic: its recall on real cans is unknown.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

SAMPLE_RATE = 16_000


def _hiss(rng: np.random.Generator, n: int) -> np.ndarray:
    low = rng.uniform(1_500.0, 3_500.0)
    high = rng.uniform(6_000.0, 7_800.0)
    sos = butter(2, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n))
    # Add a little of the full-band flow noise so the spectrum is not a pure band.
    noise += rng.uniform(0.05, 0.3) * rng.standard_normal(n) * np.std(noise)
    t = np.arange(n) / SAMPLE_RATE
    attack = 1.0 - np.exp(-t / rng.uniform(0.005, 0.03))
    sag = 1.0 - rng.uniform(0.0, 0.3) * t / max(t[-1], 1e-3)
    flutter = 1.0 + rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(3, 12) * t + rng.uniform(0, 6.3))
    release = np.minimum(1.0, (t[-1] - t) / rng.uniform(0.01, 0.05) + 1e-9)
    return noise * attack * sag * flutter * np.clip(release, 0.0, 1.0)


def _click(rng: np.random.Generator) -> np.ndarray:
    n = int(0.03 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    click = np.zeros(n)
    for _ in range(rng.integers(2, 5)):  # a few wall modes of the can
        freq = rng.uniform(1_800.0, 7_000.0)
        decay = rng.uniform(0.0015, 0.008)
        click += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.3)) * np.exp(-t / decay)
    click += 0.3 * rng.standard_normal(n) * np.exp(-t / 0.0008)  # the impact itself
    return click


def _rattle(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n)
    rate = rng.uniform(4.0, 12.0)  # shakes per second; the ball hits both ends
    period = SAMPLE_RATE / rate
    position = rng.uniform(0, period / 2)
    end = n - int(0.03 * SAMPLE_RATE)
    while position < end:
        click = _click(rng) * rng.uniform(0.5, 1.0)
        i = int(position)
        out[i : i + click.size] += click[: n - i]
        # Second hit at the other end of the can, half a period later (jittered).
        position += period * rng.uniform(0.4, 0.6)
    return out


def spray_can_clip(rng: np.random.Generator, seconds: float | None = None) -> np.ndarray:
    """One synthetic spray-can clip (float32, 16 kHz, peak about 0.5)."""
    seconds = seconds if seconds is not None else float(rng.uniform(1.5, 3.0))
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    kind = rng.choice(["rattle", "hiss", "rattle_hiss", "bursts"], p=[0.2, 0.3, 0.25, 0.25])
    if kind == "rattle":
        out += _rattle(rng, n)
    elif kind == "hiss":
        a = int(rng.uniform(0.0, 0.3) * n)
        out[a:] += _hiss(rng, n - a)
    elif kind == "rattle_hiss":
        split = int(rng.uniform(0.3, 0.6) * n)
        out[:split] += _rattle(rng, split)
        gap = int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
        if split + gap < n - SAMPLE_RATE // 10:
            out[split + gap :] += _hiss(rng, n - split - gap) * rng.uniform(0.5, 2.0)
    else:
        position = int(rng.uniform(0.0, 0.3) * SAMPLE_RATE)
        while position < n - SAMPLE_RATE // 5:
            length = min(int(rng.uniform(0.3, 1.5) * SAMPLE_RATE), n - position)
            out[position : position + length] += _hiss(rng, length)
            position += length + int(rng.uniform(0.1, 0.5) * SAMPLE_RATE)
    peak = np.max(np.abs(out)) or 1.0
    return (0.5 * out / peak).astype(np.float32)
