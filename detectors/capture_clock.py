"""Security-event times on the capture clock, where a live card's sample count and UTC part.

The agent timestamps everything by counting samples from its start. For a file that is
exact; for a live sound card it is not: the card's crystal runs fast or slow by up to
~100 ppm (seconds per day), and audio overwritten when the agent falls behind
(``RingBuffer.overruns``) shifts the count for good. Levels live with that (1 s
periods; documented in ``docs/deployment.md``), but the safe path localises an event by
the differences between sensors' onset times, to the millisecond. So the sound-card
source stamps each block with its capture time on the system clock (NTP-disciplined
on a gateway), and :class:`CaptureClock` keeps the offset between that and the sample
count: the minimum over the last seconds while it drifts (callbacks run late, never
early), reset when it jumps (lost audio). The classifier is fed sample-count times plus this offset, so onsets
come out on UTC.
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime, timedelta

log = logging.getLogger(__name__)

JUMP_S = 0.05
"""An offset change this large is a discontinuity (lost audio), not drift or jitter..."""
CONFIRM_BLOCKS = 3
"""...once that many consecutive blocks agree: one late callback (a pause of the process) is not a jump."""
WINDOW_BLOCKS = 50
"""Blocks whose offsets are kept (5 s at 0.1 s blocks): the estimate is their minimum, since a callback can
only run late, never early; at 100 ppm of drift the minimum lags the truth by at most 0.5 ms."""


class CaptureClock:
    """Offset (s) of a source's capture timestamps from the sample-count clock; 0 until one is observed."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=WINDOW_BLOCKS)
        self._pending: list[float] = []  # consecutive offsets beyond JUMP_S, not yet confirmed
        self.jumps = 0

    @property
    def offset_s(self) -> float | None:
        return min(self._recent) if self._recent else None

    def observe(self, sample_time: datetime, captured_at: datetime) -> None:
        """One block's first sample: its time by sample count, and by the capture clock."""
        instant = (captured_at - sample_time).total_seconds()
        current = self.offset_s
        if current is not None and abs(instant - current) > JUMP_S:
            self._pending.append(instant)
            if len(self._pending) >= CONFIRM_BLOCKS:
                log.warning("capture clock jumped by %+.3f s against the sample count (audio lost?); "
                            "event times follow it", min(self._pending) - current)
                self.jumps += 1
                self._recent.clear()
                self._recent.extend(self._pending)
                self._pending.clear()
            return
        self._pending.clear()
        self._recent.append(instant)

    def to_capture(self, sample_time: datetime) -> datetime:
        return sample_time + timedelta(seconds=self.offset_s or 0.0)

    def to_sample(self, capture_time: datetime) -> datetime:
        return capture_time - timedelta(seconds=self.offset_s or 0.0)
