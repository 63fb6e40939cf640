"""A fixed-size in-memory ring buffer of audio samples (the only place audio waits).

The capture thread writes, the agent reads. When the reader falls behind by more
than the capacity, the oldest samples are overwritten and counted in ``overruns``
(``SoundCardSource`` reports them in its log); memory never grows.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("ring buffer capacity must be at least one sample")
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._read = 0  # absolute indices
        self._write = 0
        self.overruns = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return self._write - self._read

    def write(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=np.float32).ravel()
        with self._cond:
            if x.size > self.capacity:
                skipped = x.size - self.capacity
                self._write += skipped  # those samples are lost at once
                x = x[-self.capacity :]
            start = self._write % self.capacity
            first = min(x.size, self.capacity - start)
            self._buf[start : start + first] = x[:first]
            self._buf[: x.size - first] = x[first:]
            self._write += x.size
            lost = self._write - self._read - self.capacity
            if lost > 0:
                self.overruns += lost
                self._read += lost
            self._cond.notify_all()

    @property
    def written(self) -> int:
        """Samples written since creation: the absolute index of the next sample to arrive."""
        with self._cond:
            return self._write

    def read(self, n: int, timeout_s: float | None = None) -> np.ndarray:
        """Up to ``n`` samples (a copy); waits up to ``timeout_s`` for at least one."""
        return self.read_indexed(n, timeout_s)[1]

    def read_indexed(self, n: int, timeout_s: float | None = None) -> tuple[int, np.ndarray]:
        """As :meth:`read`, with the absolute index of the first sample returned (to find its capture time)."""
        with self._cond:
            if self._write == self._read and timeout_s:
                self._cond.wait(timeout_s)
            take = min(n, self._write - self._read)
            start = self._read % self.capacity
            first = min(take, self.capacity - start)
            out = np.concatenate([self._buf[start : start + first], self._buf[: take - first]])
            index = self._read
            self._read += take
            return index, out
