"""IEC 61260-1 base-10 third-octave filter bank, class 1, multirate.

Each band is a Butterworth band-pass of order 3 (6 poles, three second-order
sections; a higher order only where the check below needs it) whose -3 dB edges are the standard's band edges ``fm * G**(+-1/6)``
(``G = 10**(3/10)``, base-10 midbands ``fm = 1000 * G**(x/3)``). An order-3
Butterworth meets the class 1 limits of IEC 61260-1:2014 table 1 with margin at every
normalised frequency (see ``tests/detectors/test_filterbank.py``).

Why multirate: a 25 Hz band designed directly at 48 kHz has poles at |z| ~ 0.9997,
which loses precision and costs as much as a 20 kHz band. Here each band is filtered
at the lowest rate R = fs/2**k at which its centre lies in (R/6, R/3]; the top stage
(k = 0) also takes every band above fs/6. Between stages an elliptic low-pass
(ripple 0.01 dB, pass band up to the upper edge of the highest band of the next stage,
0.374*R_out, and 80 dB stop band from the new Nyquist R_out/2) is applied before
keeping every other sample, so aliases land at least 80 dB down before any band
filter sees them.

Why (R/6, R/3] and not a lower ceiling: the cost of scipy's ``sosfilt`` kernel is set
by the number of samples per call far more than by the number of sections (the
recursion waits on its state; 3 to 6 sections cost about the same), so the bill is
roughly "calls x rate". Filtering the 5-8 kHz bands at 24 kHz instead of 48 kHz
removes three full-rate calls; the sharper anti-alias filter this needs (order 9
instead of 6) is one call either way.

All band filters keep their state across blocks: streaming equals one-shot.

Output: the mean square of each band over the samples of the block (Z-weighted,
dBFS-referenced); the meter integrates those into 1 s band Leq.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import signal

from detectors.iec61260 import class1_points, violations
from detectors.sosfilter import SosFilter
from messages.bands import BAND_KEYS, bands_below, exact_centre_hz

G = 10 ** (3 / 10)
BUTTERWORTH_ORDER = 3
MAX_ORDER = 8
AA_RIPPLE_DB = 0.01
AA_STOP_DB = 80.0
STAGE_CEILING = 1 / 3  # a stage at rate R filters the bands with centres in (R*CEILING/2, R*CEILING]
AA_PASS_EDGE = 0.38  # >= 2 * STAGE_CEILING/2 * G**(1/6) = 0.374 (input Nyquist = 1)


def band_edges_hz(position: int) -> tuple[float, float]:
    """Lower and upper edge of the band at ``position`` (0 = 25 Hz)."""
    fm = exact_centre_hz(position)
    return fm * G ** (-1 / 6), fm * G ** (1 / 6)


def _relative_attenuation(sos: np.ndarray, fm: float, rate: float) -> list[tuple[float, float]]:
    points = [om for om, _, _ in class1_points() if fm * om < rate / 2]
    _, h = signal.sosfreqz(sos, worN=2 * np.pi * fm * np.array([1.0, *points]) / rate)
    att = -20 * np.log10(np.abs(h) + 1e-300)
    return [(om, float(a - att[0])) for om, a in zip(points, att[1:])]


@lru_cache(maxsize=512)
def _band_sos(position: int, rate: float) -> np.ndarray:
    """Smallest Butterworth order (>= 3) meeting class 1 with 0.3 dB headroom at ``rate``.

    Order 3 suffices except for bands close to Nyquist, where the bilinear transform
    compresses the upper skirt and widens the lower one (e.g. 20 kHz at 48 kHz).
    """
    lo, hi = band_edges_hz(position)
    fm = exact_centre_hz(position)
    for order in range(BUTTERWORTH_ORDER, MAX_ORDER + 1):
        sos = signal.butter(order, [lo, hi], btype="bandpass", fs=rate, output="sos")
        if not violations(_relative_attenuation(sos, fm, rate), margin_db=0.3):
            return sos
    raise ValueError(f"no Butterworth order <= {MAX_ORDER} meets IEC 61260-1 class 1 for {fm:.0f} Hz at {rate:g} Hz")


@lru_cache(maxsize=1)
def _aa_sos() -> np.ndarray:
    """Decimate-by-2 anti-alias low-pass, normalised to the *input* rate (Nyquist = 1)."""
    # Pass band up to the upper edge of the highest band processed below,
    # (R_out/3)*G**(1/6) = 0.374*R_out, i.e. 0.374 of the input Nyquist; stop band from R_out/2.
    order, wn = signal.ellipord(AA_PASS_EDGE, 0.5, AA_RIPPLE_DB, AA_STOP_DB)
    return signal.ellip(order, AA_RIPPLE_DB, AA_STOP_DB, wn, btype="low", output="sos")


@dataclass
class _Band:
    position: int
    filter: SosFilter


@dataclass
class _Stage:
    rate: float
    bands: list[_Band] = field(default_factory=list)
    aa: SosFilter | None = None
    phase: int = 0  # index (mod 2) of the next input sample that survives decimation


class ThirdOctaveBank:
    """Streaming third-octave analysis of one channel at ``fs``.

    ``process(block)`` returns ``(sum_of_squares, counts)`` per band (wire order of the
    bands kept, see :attr:`positions`) so that callers can integrate over any period.
    """

    def __init__(self, fs: float, dtype: type = np.float32):
        self.fs = float(fs)
        self.dtype = dtype
        keys = bands_below(self.fs / 2)
        if not keys:
            raise ValueError(f"no third-octave band fits below Nyquist at {fs:g} Hz")
        self.positions: tuple[int, ...] = tuple(range(len(keys)))
        self.keys: tuple[str, ...] = tuple(BAND_KEYS[p] for p in self.positions)
        self._stages = self._plan()
        self._slot = {b.position: i for i, b in enumerate(b for s in self._stages for b in s.bands)}
        self._order = np.array([self._slot[p] for p in self.positions])

    def _plan(self) -> list[_Stage]:
        stages: list[_Stage] = []
        remaining = sorted(self.positions, reverse=True)
        rate = self.fs
        while remaining:
            stage = _Stage(rate=rate)
            floor = rate * STAGE_CEILING / 2
            while remaining and exact_centre_hz(remaining[0]) > floor:
                p = remaining.pop(0)
                stage.bands.append(_Band(p, SosFilter(_band_sos(p, rate), self.dtype)))
            if remaining:
                stage.aa = SosFilter(_aa_sos(), self.dtype)
            stages.append(stage)
            rate /= 2
        return stages

    @property
    def stage_rates(self) -> list[float]:
        return [s.rate for s in self._stages]

    def process(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed one block; per-band sums of squares and sample counts (wire order)."""
        x = np.asarray(block, dtype=self.dtype)
        sums = np.zeros(len(self._slot))
        counts = np.zeros(len(self._slot))
        i = 0
        for stage in self._stages:
            if x.size == 0:
                break
            for band in stage.bands:
                y = band.filter(x)
                sums[i] = float(np.einsum("i,i->", y, y))
                counts[i] = y.size
                i += 1
            if stage.aa is None:
                break
            y = stage.aa(x)
            x = y[stage.phase :: 2]
            stage.phase = (stage.phase - y.size) % 2
        return sums[self._order], counts[self._order]
