"""IEC 61672-1 exponential time weightings F (125 ms) and S (1 s), streaming.

The time-weighted mean square obeys ``tau * dy/dt = x^2 - y``; its exact discrete
form for a sample period T is ``y[n] = a*y[n-1] + (1-a)*x[n]^2`` with
``a = exp(-T/tau)``. After the signal stops, the level therefore falls by
``10*log10(e)/tau`` dB per second: 34.7 dB/s for F and 4.3 dB/s for S, the decay
rates the standard asks for (IEC 61672-1:2013, 5.8). ``lfilter`` carries the state
across blocks, so a stream cut into any blocks gives the same levels as one shot.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

TAU_FAST_S = 0.125
TAU_SLOW_S = 1.0


def decay_rate_db_per_s(tau_s: float) -> float:
    """Theoretical decay of an exponential time weighting, dB/s."""
    return 10 * math.log10(math.e) / tau_s


class ExponentialAverager:
    """Mean square with an exponential time weighting ``tau`` at ``fs``, state kept."""

    def __init__(self, tau_s: float, fs: float):
        if tau_s <= 0 or fs <= 0:
            raise ValueError(f"time constant ({tau_s}) and sample rate ({fs}) must be positive")
        self.tau_s = tau_s
        self.fs = fs
        a = math.exp(-1.0 / (tau_s * fs))
        self._b = np.array([1.0 - a])
        self._a = np.array([1.0, -a])
        self._zi = np.zeros(1)

    def __call__(self, squared: np.ndarray) -> np.ndarray:
        """Time-weighted mean square for each input sample (input: already squared)."""
        y, self._zi = signal.lfilter(self._b, self._a, squared, zi=self._zi)
        return y

    @property
    def value(self) -> float:
        """The current time-weighted mean square (after the last sample fed)."""
        return float(self._zi[0] / -self._a[1]) if self._a[1] != 0 else 0.0

    def reset(self, mean_square: float = 0.0) -> None:
        self._zi[:] = -self._a[1] * mean_square
