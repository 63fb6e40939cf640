"""Times on the capture clock, where a live card's sample count and UTC part.

The agent timestamps everything by counting samples from its start. For a file that is
exact; for a live sound card it is not: the card's crystal runs fast or slow by up to
~100 ppm (seconds per day, so level frames would run minutes ahead after weeks and be
quarantined as from the future), and audio overwritten when the agent falls behind
(``RingBuffer.overruns``) shifts the count for good. The safe path also localises an
event by the differences between sensors' onset times, to the millisecond.

So the sound-card source stamps each block with its capture time on the system clock
(NTP-disciplined on a gateway) and says when audio was lost before it, and
:class:`CaptureClock` keeps the offset between that clock and the sample count:

* with the card's own capture times (PortAudio's ADC time, the usual case), each
  block's offset as it is: drift, lost audio and clock steps show at once;
* with stamps taken when a callback ran (cards without ADC times), the minimum of the
  last blocks' offsets while it drifts (a callback can run late, never early), the new
  offset at once after a loss the source saw (ring overrun, card overflow flag), and
  after a jump it did not see, the new offset once three consecutive blocks agree on it
  (one late callback, a pause of the process, is not a jump), from the first of them.

Everything inside the agent, the classifier and the meter included, keeps sample-count
time (so the classifier never sees a jump); what leaves it, a security event's onset and
a level frame's start, is carried over to the capture clock with the offset that held at
that sample time (:meth:`to_capture`), which stays known for :data:`HISTORY_S` seconds.
After lost audio the frames show a gap of that length, as they should.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from collections import deque
from datetime import datetime, timedelta
from operator import itemgetter

log = logging.getLogger(__name__)

JUMP_S = 0.05
"""An offset change this large is a discontinuity, not drift or callback jitter..."""
CONFIRM_BLOCKS = 3
"""...once that many consecutive blocks agree on the new offset (within ``JUMP_S``), when the source did not report it."""
WINDOW_BLOCKS = 50
"""Blocks whose offsets are kept (5 s at 0.1 s blocks): the estimate is their minimum. At 100 ppm of drift
the minimum lags the truth by at most 0.5 ms."""
HISTORY_S = 30.0
"""How long past offsets are kept: onsets are reported at most a few seconds after their audio."""
WARN_EVERY_S = 10.0


class CaptureClock:
    """Offset (s) of a source's capture timestamps from the sample-count clock; 0 until one is observed."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=WINDOW_BLOCKS)
        self._pending: list[tuple[datetime, float]] = []  # consecutive (sample time, offset) beyond JUMP_S, unconfirmed
        self._history: deque[tuple[datetime, float]] = deque()  # (sample time from which, offset), oldest first
        self.jumps = 0  # offset changes the source did not report
        self._last_warning = -float("inf")

    @property
    def offset_s(self) -> float | None:
        return min(self._recent) if self._recent else None

    def observe(self, sample_time: datetime, captured_at: datetime, *, after_loss: bool = False,
                precise: bool = False) -> None:
        """One block's first sample: its sample-count time and its capture time.

        ``after_loss``: the source saw audio lost just before this block. ``precise``: the
        stamp comes from the card's own capture clock (PortAudio's ADC time), not from when
        a callback happened to run, so it is taken as it is: drift, lost audio and clock
        steps of any size then show at once.
        """
        instant = (captured_at - sample_time).total_seconds()
        current = self.offset_s
        if current is None or after_loss or precise:
            if current is not None and not after_loss and abs(instant - current) > JUMP_S:
                self._unreported_jump(instant - current)
            self._restart([instant])
            self._remember(sample_time)
        elif abs(instant - current) <= JUMP_S:
            self._pending.clear()
            self._recent.append(instant)
            self._remember(sample_time)
        else:
            if self._pending and abs(instant - self._pending[0][1]) > JUMP_S:
                self._pending.clear()  # outliers that disagree are jitter, not one new offset
            self._pending.append((sample_time, instant))
            if len(self._pending) >= CONFIRM_BLOCKS:
                self._unreported_jump(min(o for _, o in self._pending) - current)
                since = self._pending[0][0]  # the jump happened at the first block that showed it
                self._restart([o for _, o in self._pending])
                self._remember(since)

    def _unreported_jump(self, step_s: float) -> None:
        self.jumps += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            log.warning("capture timestamps moved by %+.3f s against the sample count with no loss reported "
                        "(%d time(s) so far; system clock stepped, or the card dropped audio?); times follow them",
                        step_s, self.jumps)
            self._last_warning = now

    def _restart(self, offsets: list[float]) -> None:
        self._recent.clear()
        self._recent.extend(offsets)
        self._pending = []

    def _remember(self, sample_time: datetime) -> None:
        offset = self.offset_s
        assert offset is not None
        while self._history and self._history[-1][0] >= sample_time:
            self._history.pop()  # a confirmed jump takes effect from an earlier block than the last entry
        if not self._history or self._history[-1][1] != offset:
            self._history.append((sample_time, offset))
        horizon = sample_time - timedelta(seconds=HISTORY_S)
        while len(self._history) > 1 and self._history[1][0] <= horizon:
            self._history.popleft()

    def to_capture(self, sample_time: datetime) -> datetime:
        """``sample_time`` on the capture clock, with the offset that held then (unchanged without observations)."""
        if not self._history:
            return sample_time
        i = bisect_right(self._history, sample_time, key=itemgetter(0)) - 1
        return sample_time + timedelta(seconds=self._history[max(i, 0)][1])
