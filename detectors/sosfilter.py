"""Stateful second-order-section filtering with low per-call overhead.

``scipy.signal.sosfilt`` spends ~60 µs per call validating and reshaping its
arguments (``moveaxis`` etc.) before its compiled loop runs; the meter makes ~40
calls per block, which made that overhead costlier than the filtering itself. When
scipy's compiled kernel is importable we call it directly with arrays already in the
layout it wants; otherwise we fall back to the public function (same numbers, the
streaming-equals-one-shot tests compare against the public ``sosfilt``).
"""

from __future__ import annotations

import numpy as np
from scipy import signal

try:  # scipy's compiled kernel: _sosfilt(sos, x[n_signals, n], zi[n_signals, n_sections, 2]), in place
    from scipy.signal._sosfilt import _sosfilt as _kernel
except ImportError:  # pragma: no cover - other scipy layouts
    _kernel = None


class SosFilter:
    """``sosfilt`` with its state carried across blocks, so streaming equals one-shot."""

    def __init__(self, sos: np.ndarray, dtype: type = np.float64):
        self.dtype = np.dtype(dtype)
        self.sos = np.ascontiguousarray(sos, dtype=self.dtype)
        if self.sos.ndim != 2 or self.sos.shape[1] != 6:
            raise ValueError(f"sos must have shape (n_sections, 6), got {self.sos.shape}")
        self.zi = np.zeros((1, self.sos.shape[0], 2), dtype=self.dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = np.array(x, dtype=self.dtype, copy=True, ndmin=2, order="C")
        if y.shape[0] != 1:
            raise ValueError(f"expected a 1-D block, got shape {np.shape(x)}")
        if y.shape[1] == 0:
            return y[0]
        if _kernel is not None:
            _kernel(self.sos, y, self.zi)
            return y[0]
        out, zf = signal.sosfilt(self.sos, y[0], zi=self.zi[0])
        self.zi[0] = zf
        return out

    def reset(self) -> None:
        self.zi[:] = 0.0
