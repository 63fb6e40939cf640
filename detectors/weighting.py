"""IEC 61672-1 frequency weightings A, C and Z as digital filters (second-order sections).

Why not a plain bilinear transform of the analogue weighting: the bilinear transform
maps the analogue response at infinity onto Nyquist, so the double pole at
f4 = 12.2 kHz is squeezed and a bilinear A-weighting at 48 kHz is several dB low at
16-20 kHz, and at 16 kHz sampling it reaches -inf at Nyquist where the standard still
expects -1.1 dB at 8 kHz. Class 1 (IEC 61672-1:2013, table 3) allows +2.5/-16 dB at
16 kHz and +3/-inf at 20 kHz, but we want the meter well inside the tolerance
everywhere, so the design is split:

* the *low* poles (f1 = 20.6 Hz double, f2 = 107.7 Hz, f3 = 737.9 Hz) and the zeros at
  DC go through the bilinear transform, which is exact at low frequency and whose
  high-frequency asymptote (unity) is also the analogue one;
* the *high* double pole ``1/(1 + s/w4)^2`` is replaced by a biquad fitted by least
  squares on the log magnitude from 500 Hz to min(20 kHz, Nyquist) (a
  frequency-sampled IIR design). The fit keeps its poles inside |z| < 0.95.

The result stays within 0.15 dB of the design goal from 10 Hz to 20 kHz (or Nyquist)
at 16, 32, 44.1 and 48 kHz; ``tests/detectors/test_weighting.py`` checks every nominal
third-octave frequency against the class 1 acceptance limits.

C = [HP pair at f1] x [high biquad]; A = C x [zeros 0,0 / poles f2, f3]. Sharing C
inside A saves one filter pass per sample in the meter.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import optimize, signal

from detectors.sosfilter import SosFilter

Weighting = Literal["A", "C", "Z"]

# IEC 61672-1:2013 Annex E: pole frequencies derived from the defining constants.
_FR = 1000.0
_FL = 10**1.5
_FH = 10**3.9
_D = math.sqrt(0.5)
_FA = 10**2.45
_B = (1 / (1 - _D)) * (_FR**2 + _FL**2 * _FH**2 / _FR**2 - _D * (_FL**2 + _FH**2))
_C = _FL**2 * _FH**2
F1 = math.sqrt((-_B - math.sqrt(_B**2 - 4 * _C)) / 2)  # 20.598997 Hz
F4 = math.sqrt((-_B + math.sqrt(_B**2 - 4 * _C)) / 2)  # 12194.217 Hz
F2 = (3 - math.sqrt(5)) / 2 * _FA  # 107.65265 Hz
F3 = (3 + math.sqrt(5)) / 2 * _FA  # 737.86223 Hz

SUPPORTED_RATES_HZ = (16000, 32000, 44100, 48000)
"""Rates proven by the tests; other rates from 8 kHz up are designed the same way."""


class WeightingDesignError(ValueError):
    """The requested weighting or sample rate cannot be designed."""


def _c_unnormalised(f: np.ndarray) -> np.ndarray:
    f2 = f * f
    return F4**2 * f2 / ((f2 + F1**2) * (f2 + F4**2))


def _a_over_c(f: np.ndarray) -> np.ndarray:
    f2 = f * f
    return f2 / np.sqrt((f2 + F2**2) * (f2 + F3**2))


def design_goal_db(weighting: Weighting, f: np.ndarray | float) -> np.ndarray:
    """The standard's weighting (Annex E equations), normalised to 0 dB at 1 kHz exactly."""
    f = np.atleast_1d(np.asarray(f, dtype=float))
    if weighting == "Z":
        return np.zeros_like(f)
    ref = np.array([1000.0])
    c = _c_unnormalised(f) / _c_unnormalised(ref)
    if weighting == "C":
        return 20 * np.log10(c)
    if weighting == "A":
        return 20 * np.log10(c * _a_over_c(f) / _a_over_c(ref))
    raise WeightingDesignError(f"unknown frequency weighting {weighting!r} (expected A, C or Z)")


def _high_pole_target_db(f: np.ndarray) -> np.ndarray:
    return -20 * np.log10(1 + (f / F4) ** 2)


@lru_cache(maxsize=16)
def _high_pole_biquad(fs: float) -> tuple[float, ...]:
    """Least-squares fit (log magnitude) of ``1/(1+s/w4)^2`` by a stable digital biquad."""
    fmax = min(20000.0, fs / 2)
    f = np.geomspace(500.0, fmax, 240)
    w = 2 * np.pi * f / fs
    target = _high_pole_target_db(f)

    def residual(p: np.ndarray) -> np.ndarray:
        a = np.array([1.0, -(p[3] + p[4]), p[3] * p[4]])
        _, h = signal.freqz(p[:3], a, worN=w)
        return 20 * np.log10(np.abs(h) + 1e-30) - target

    pm = math.exp(-2 * math.pi * F4 / fs)  # matched-z pole as the starting point
    p0 = np.array([(1 - pm) * (1 - pm / 2), 0.0, 0.0, pm, pm / 2])
    bounds = ([-np.inf] * 3 + [-0.95, -0.95], [np.inf] * 3 + [0.95, 0.95])
    sol = optimize.least_squares(residual, p0, bounds=bounds, x_scale=1.0, xtol=1e-12, ftol=1e-12)
    err = float(np.max(np.abs(residual(sol.x))))
    if err > 0.3:
        raise WeightingDesignError(f"high-frequency weighting fit at {fs:g} Hz is off by {err:.2f} dB")
    b = sol.x[:3]
    a = (1.0, -(sol.x[3] + sol.x[4]), sol.x[3] * sol.x[4])
    return (*b, *a)


def _bilinear_sos(zeros_hz: list[float], poles_hz: list[float], fs: float) -> np.ndarray:
    """Bilinear transform of an analogue zpk given in Hz (real, negative-axis roots)."""
    z = [-2 * math.pi * f for f in zeros_hz]
    p = [-2 * math.pi * f for f in poles_hz]
    zd, pd, kd = signal.bilinear_zpk(z, p, 1.0, fs)
    return signal.zpk2sos(zd, pd, kd)


def _normalise(sos: np.ndarray, fs: float, gain_at_1k: float) -> np.ndarray:
    """Scale the first section so that |H(1 kHz)| == gain_at_1k."""
    _, h = signal.sosfreqz(sos, worN=[2 * np.pi * 1000.0 / fs])
    sos = sos.copy()
    sos[0, :3] *= gain_at_1k / abs(h[0])
    return sos


@lru_cache(maxsize=16)
def _c_sos_cached(fs: float) -> np.ndarray:
    low = _bilinear_sos([0.0, 0.0], [F1, F1], fs)
    high = np.array([_high_pole_biquad(fs)])
    return _normalise(np.vstack([low, high]), fs, 1.0)


@lru_cache(maxsize=16)
def _a_extra_sos_cached(fs: float) -> np.ndarray:
    return _normalise(_bilinear_sos([0.0, 0.0], [F2, F3], fs), fs, 1.0)


def _check_rate(fs: float) -> float:
    fs = float(fs)
    if not 8000 <= fs <= 192000:
        raise WeightingDesignError(f"sample rate {fs:g} Hz outside 8-192 kHz")
    return fs


def c_sos(fs: float) -> np.ndarray:
    """C-weighting sections at ``fs`` (0 dB at 1 kHz)."""
    return _c_sos_cached(_check_rate(fs)).copy()


def a_from_c_sos(fs: float) -> np.ndarray:
    """The section that turns a C-weighted signal into an A-weighted one."""
    return _a_extra_sos_cached(_check_rate(fs)).copy()


def weighting_sos(weighting: Weighting, fs: float) -> np.ndarray | None:
    """Complete sections of one weighting; ``None`` for Z (no filtering)."""
    if weighting == "Z":
        return None
    if weighting == "C":
        return c_sos(fs)
    if weighting == "A":
        return np.vstack([c_sos(fs), a_from_c_sos(fs)])
    raise WeightingDesignError(f"unknown frequency weighting {weighting!r} (expected A, C or Z)")


def response_db(weighting: Weighting, fs: float, f: np.ndarray | float) -> np.ndarray:
    """Magnitude response of the digital filter in dB at frequencies ``f`` (Hz)."""
    f = np.atleast_1d(np.asarray(f, dtype=float))
    sos = weighting_sos(weighting, fs)
    if sos is None:
        return np.zeros_like(f)
    _, h = signal.sosfreqz(sos, worN=2 * np.pi * f / fs)
    return 20 * np.log10(np.abs(h))


class StreamingSos(SosFilter):
    """``sosfilt`` with its state carried across blocks, so streaming equals one-shot."""
