"""Non-finite samples (NaN, +-Inf) from a source, replaced by silence and located.

Why: float sources (``f32le`` on stdin, float WAV/FLAC, a misbehaving driver) can carry
them, and one NaN in a recursive filter's state stays there for good: the meter would
report 0 dB with status ``ok`` forever after, and the classifier refuses such audio
outright. Silence is the neutral stand-in (it adds no energy and no event); the meter
marks the period that held them ``degraded``, so the gap is visible downstream.
"""

from __future__ import annotations

import numpy as np

_NONE = np.zeros(0, dtype=np.intp)


def silence_non_finite(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` with non-finite values set to 0, and the indices that were; a copy only if needed."""
    finite = np.isfinite(samples)
    if finite.all():
        return samples, _NONE
    bad = np.flatnonzero(~finite)
    clean = samples.copy()
    clean[bad] = 0.0
    return clean, bad
