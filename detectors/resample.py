"""Streaming rational resampling to the classifier's rate (e.g. 48 kHz -> 16 kHz).

``scipy.signal.resample_poly`` works on whole arrays; applied block by block it
would put edge transients at every block boundary. This keeps the last ``taps``
input samples and evaluates the polyphase filter (``upfirdn``) only at the output
instants that belong to the new block, so a stream cut into any blocks gives the
same samples as one call. The filter's group delay is removed (output instant ``m``
is input time ``m / fs_out``) so onset times stay exact to the sample.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy import signal


class StreamingResampler:
    """``fs_in`` -> ``fs_out`` with a Kaiser-windowed low-pass (as ``resample_poly``)."""

    def __init__(self, fs_in: int, fs_out: int, half_len: int = 10):
        if fs_in <= 0 or fs_out <= 0:
            raise ValueError(f"sample rates must be positive ({fs_in} -> {fs_out})")
        g = gcd(int(fs_in), int(fs_out))
        self.up = int(fs_out) // g
        self.down = int(fs_in) // g
        self.identity = self.up == self.down
        if self.identity:
            return
        max_rate = max(self.up, self.down)
        # Odd length; the group delay is a multiple of ``down`` so output instants fall on it.
        n_half = -(-half_len * max_rate // self.down) * self.down  # a multiple of ``down``
        h = signal.firwin(2 * n_half + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
        self._h = h.astype(np.float64)
        self._delay_up = n_half  # group delay in up-sampled samples
        self._history = np.zeros(0, dtype=np.float64)
        self._hist_start = 0  # absolute input index of _history[0]
        self._n_in = 0
        self._next_out = 0  # absolute output index to produce next

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.identity:
            return np.asarray(x, dtype=np.float32)
        x = np.asarray(x, dtype=np.float64)
        buf = np.concatenate([self._history, x])
        self._n_in += x.size
        # Output m sits at up-sampled position p = m*down + delay; it needs inputs up to p/up.
        last_ready = (self._n_in * self.up - 1 - self._delay_up) // self.down
        if last_ready < self._next_out:
            self._keep(buf)
            return np.zeros(0, dtype=np.float32)
        # upfirdn output k is at up-sampled position k*down relative to buf start (needs
        # hist_start*up divisible by down: _keep trims on such boundaries).
        base = self._hist_start * self.up
        y = signal.upfirdn(self._h, buf, self.up, self.down)
        first = (self._next_out * self.down + self._delay_up - base) // self.down
        count = last_ready - self._next_out + 1
        out = y[first : first + count]
        self._next_out += count
        self._keep(buf)
        return out.astype(np.float32)

    def _keep(self, buf: np.ndarray) -> None:
        """Keep enough history for the filter; trim at multiples of ``down`` input samples."""
        need_from = (self._next_out * self.down + self._delay_up - len(self._h) + 1) // self.up - 1
        need_from = max(self._hist_start, (max(need_from, 0) // self.down) * self.down)
        drop = need_from - self._hist_start
        self._history = buf[drop:].copy()
        self._hist_start = need_from
