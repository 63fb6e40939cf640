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


# --- Vehicle collisions -------------------------------------------------------------
# The real crash clips come from two videos; heads learn the videos. A synthetic crash
# gives the class what all collisions share, from their physics:
#
# * often a **skid** first: rubber stick-slip on asphalt, a rough squeal with harmonics whose
#   pitch wanders (0.4-1.2 kHz, chattering at 20-60 Hz), over road noise, growing until the impact;
# * the **impact**, 0.15-0.5 s of bodies deforming: tens of sub-impacts, each a burst of
#   broadband noise through the dense inharmonic modes of crumpling panels (0.2-5 kHz),
#   over a body thump (the mass of the car, 40-120 Hz, damped within 0.05-0.15 s);
# * often **debris**: glass and plastic fragments, bright ticks (2.5-7.5 kHz) thinning out
#   over a second, and a scrape; sometimes a second, weaker impact;
# * mostly, the **traffic** around it: engine harmonics and road rumble, 12-28 dB below the impact.


def _damped(rng: np.random.Generator, n: int, low: float, high: float, decay: tuple[float, float]) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    return np.sin(2 * np.pi * rng.uniform(low, high) * t + rng.uniform(0, 6.3)) * np.exp(-t / rng.uniform(*decay))


def _band_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    sos = butter(2, [low, min(high, 7_900.0)], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, rng.standard_normal(n))


def _skid(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(400.0, 1_200.0) * (1 + 0.03 * np.cumsum(rng.standard_normal(n)) / np.sqrt(SAMPLE_RATE))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    squeal = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 6))
    rough = 1 + rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * rng.uniform(8.0, 30.0) * t)  # stick-slip flutter
    road = _band_noise(rng, n, 300.0, 5_000.0)
    growth = np.minimum(1.0, (t + 0.05) / max(t[-1], 0.05)) ** rng.uniform(0.5, 2.0)
    return (squeal * rough * rng.uniform(0.3, 0.7) + road / (np.std(road) + 1e-9) * rng.uniform(0.3, 0.8)) * growth


def _resonant_noise(rng: np.random.Generator, n: int, low: float, high: float, modes: int) -> np.ndarray:
    """Noise through many narrow resonances: the dense, inharmonic modes of crumpling panels."""
    out = np.zeros(n)
    for _ in range(modes):
        centre = rng.uniform(low, high)
        out += _band_noise(rng, n, centre / 1.08, centre * 1.08) * rng.uniform(0.3, 1.0)
    return out / (np.std(out) + 1e-9)


def _impact(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    length = rng.uniform(0.15, 0.5)  # the collision itself: tens of sub-impacts as the bodies deform
    envelope = np.zeros(n)
    for _ in range(rng.integers(8, 30)):
        at = rng.uniform(0, length) ** 1.5 / length ** 0.5
        envelope += rng.uniform(0.2, 1.0) * np.where(t >= at, np.exp(-(t - at) / rng.uniform(0.01, 0.06)), 0.0)
    envelope += np.exp(-t / rng.uniform(0.15, 0.5)) * 0.2  # what keeps ringing and rolling after
    crunch = rng.standard_normal(n) * rng.uniform(0.3, 0.8) + _resonant_noise(rng, n, 200.0, 5_000.0, int(rng.integers(12, 30)))
    thump = _damped(rng, n, 40.0, 120.0, (0.05, 0.15)) * rng.uniform(1.0, 3.0)
    return crunch * envelope + thump


def _debris(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n)
    span = min(n, int(rng.uniform(0.3, 1.5) * SAMPLE_RATE))
    for _ in range(rng.integers(5, 30)):  # fragments land, fewer and fewer
        i = int(span * rng.uniform(0, 1) ** 2)
        tick = _damped(rng, int(0.02 * SAMPLE_RATE), 2_500.0, 7_500.0, (0.001, 0.01)) * rng.uniform(0.1, 0.6)
        out[i : i + tick.size] += tick[: n - i]
    scrape_n = min(n, int(rng.uniform(0.3, 1.0) * SAMPLE_RATE))
    fade = np.exp(-np.arange(scrape_n) / (0.3 * scrape_n))
    out[:scrape_n] += _band_noise(rng, scrape_n, 300.0, 3_000.0) * fade * rng.uniform(0.05, 0.3)
    return out


def _traffic(rng: np.random.Generator, n: int) -> np.ndarray:
    """The vehicles themselves: an engine's firing harmonics (25-70 Hz fundamental) over tyre and road rumble."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(25.0, 70.0) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    engine = sum(np.sin(k * phase + rng.uniform(0, 6.3)) / k for k in range(1, 16))
    rumble = sosfilt(butter(2, rng.uniform(800.0, 2_000.0), fs=SAMPLE_RATE, output="sos"), rng.standard_normal(n))
    return engine / (np.std(engine) + 1e-9) + rumble / (np.std(rumble) + 1e-9) * rng.uniform(0.5, 1.5)


def crash_clip(rng: np.random.Generator, seconds: float | None = None) -> np.ndarray:
    """One synthetic vehicle collision (float32, 16 kHz, peak 0.5; the impact is its loudest point)."""
    seconds = seconds if seconds is not None else float(rng.uniform(2.5, 4.0))
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    hit = int(rng.uniform(0.25, 0.55) * n)
    if rng.uniform() < 0.5:
        start = max(0, hit - int(rng.uniform(0.3, 1.5) * SAMPLE_RATE))
        out[start:hit] += _skid(rng, hit - start) * rng.uniform(0.1, 0.4)
    out[hit:] += _impact(rng, n - hit)
    if rng.uniform() < 0.6:
        at = hit + int(rng.uniform(0.03, 0.3) * SAMPLE_RATE)
        out[at:] += _debris(rng, n - at)
    if rng.uniform() < 0.3:
        at = hit + int(rng.uniform(0.2, 0.8) * SAMPLE_RATE)
        if at < n:
            out[at:] += _impact(rng, n - at) * rng.uniform(0.2, 0.5)
    if rng.uniform() < 0.7:  # RMS 12-28 dB below the impact's loudest 100 ms
        frames = out[: n // 1600 * 1600].reshape(-1, 1600)
        loudest = float(np.sqrt(np.max(np.mean(frames**2, axis=1))))
        traffic = _traffic(rng, n)
        out += traffic / (np.std(traffic) + 1e-9) * loudest * 10 ** (rng.uniform(-28.0, -12.0) / 20)
    peak = np.max(np.abs(out)) or 1.0
    return (0.5 * out / peak).astype(np.float32)
