"""A streaming class 1 sound level meter producing one set of levels per period (1 s).

``SoundLevelMeter.feed(block)`` accepts blocks of any length (float samples in
full-scale units, 1.0 = digital full scale) and returns the periods it completed.
Per period it gives LAeq, LAFmax, LAFmin, LCpeak (read 4x oversampled, so a crest
between two samples counts: ``detectors/true_peak.py``) and the Z-weighted third-octave
band Leq, all in dB re 20 µPa once ``calibration_offset_db`` is added:

    L = 10*log10(mean square in full-scale units) + calibration_offset_db

(``sonopolis calibrate`` derives the offset from a 94/114 dB calibrator recording).

Levels outside what the wire accepts are *not* invented: digital silence yields
status ``fault``, clipping (|x| >= 0.999) or a level clamped to the wire range yields
``degraded``; the numbers are then floored/capped and the status tells the reader.
Non-finite samples (NaN, Inf) are measured as silence and make their period
``degraded`` (``detectors/finite.py``): they never reach a filter's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from detectors.filterbank import ThirdOctaveBank
from detectors.finite import silence_non_finite
from detectors.time_weighting import TAU_FAST_S, ExponentialAverager
from detectors.true_peak import TruePeak
from detectors.weighting import StreamingSos, a_from_c_sos, c_sos
from messages.level_frame import LEVEL_MAX_DB, LEVEL_MIN_DB, PEAK_MAX_DB, LevelFrame, SensorStatus, SourceCounts

CLIP_THRESHOLD = 0.999
_TINY = 1e-30


@dataclass(frozen=True)
class PeriodLevels:
    """Levels of one integration period (dB, calibrated, unclamped)."""

    start: datetime
    period_s: float
    laeq: float
    lafmax: float
    lafmin: float
    lcpeak: float
    bands: dict[str, float]
    clipped: bool
    silent: bool
    repaired: int = 0  # non-finite samples measured as silence

    def status(self) -> SensorStatus:
        if self.silent:
            return SensorStatus.FAULT
        values = [self.laeq, self.lafmax, self.lafmin, *self.bands.values()]
        out_of_range = any(v < LEVEL_MIN_DB or v > LEVEL_MAX_DB for v in values) or self.lcpeak > PEAK_MAX_DB
        return SensorStatus.DEGRADED if self.clipped or self.repaired or out_of_range else SensorStatus.OK

    def to_frame(self, sensor_id: str, sources: SourceCounts | None = None) -> LevelFrame:
        """The wire message; values clamped to the schema's range, status says why."""

        def lv(v: float) -> float:
            return round(min(LEVEL_MAX_DB, max(LEVEL_MIN_DB, v)), 2)

        return LevelFrame(
            sensor_id=sensor_id,
            time=self.start,
            period_s=self.period_s,
            laeq=lv(self.laeq),
            lafmax=lv(self.lafmax),
            lafmin=lv(self.lafmin),
            lcpeak=round(min(PEAK_MAX_DB, max(LEVEL_MIN_DB, self.lcpeak)), 2),
            bands={k: lv(v) for k, v in self.bands.items()},
            status=self.status(),
            sources=sources or SourceCounts(),
        )


def _db(mean_square: float, offset: float) -> float:
    return 10 * math.log10(max(mean_square, _TINY)) + offset


class SoundLevelMeter:
    """One channel at ``fs``; periods of ``period_s`` starting at ``start`` (UTC)."""

    def __init__(self, fs: float, calibration_offset_db: float, start: datetime, period_s: float = 1.0):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self.fs = float(fs)
        self.offset = float(calibration_offset_db)
        self.period_s = period_s
        self.period_n = int(round(period_s * self.fs))
        if self.period_n < 1:
            raise ValueError(f"period {period_s} s is shorter than one sample at {fs:g} Hz")
        self._c = StreamingSos(c_sos(self.fs))
        self._a = StreamingSos(a_from_c_sos(self.fs))
        self._c_peak = TruePeak()  # LCpeak between samples too (detectors/true_peak.py)
        # F weighting runs on 1 ms mean squares: exact for energy constant over 1 ms and
        # 1/125 of the full-rate cost (the max/min of a 125 ms average cannot move faster).
        self._decim = max(1, int(self.fs // 1000))
        self._fast = ExponentialAverager(TAU_FAST_S, self.fs / self._decim)
        self._a_rest = np.zeros(0)  # A-weighted samples of an unfinished 1 ms frame
        self._pending: list[np.ndarray] = []  # samples of the current period, not yet filtered
        self.bank = ThirdOctaveBank(self.fs)
        self._start = start.astimezone(timezone.utc)
        self._index = 0  # periods completed
        self._primed = False
        self._reset_period()

    def _reset_period(self) -> None:
        self._n = 0
        self._sum_a2 = 0.0
        self._fmax = 0.0
        self._fmin = math.inf
        self._cpeak = 0.0
        self._clipped = False
        self._nonzero = False
        self._repaired = 0
        self._band_sums = np.zeros(len(self.bank.positions))
        self._band_counts = np.zeros(len(self.bank.positions))

    @property
    def periods_completed(self) -> int:
        return self._index

    @property
    def unfinished_s(self) -> float:
        """Seconds of the current, incomplete period: what an end of stream leaves unreported."""
        return self._n / self.fs

    @property
    def next_period_start(self) -> datetime:
        return self._start + timedelta(seconds=self._index * self.period_s)

    def feed(self, block: np.ndarray) -> list[PeriodLevels]:
        """Process ``block`` (1-D float); return the periods completed by it (often none).

        Samples are held (in memory, at most one period) until their period is complete
        and then filtered in one pass: levels only exist per period, so filtering earlier
        gains nothing, and one call per filter per period instead of one per block
        removes most of the per-call cost (about 40 filter calls per pass). Filter
        states carry over between periods, so any cutting of the stream gives the same
        levels as one shot.
        """
        x = np.asarray(block, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a mono 1-D block, got shape {x.shape}")
        x, repaired_at = silence_non_finite(x)
        done: list[PeriodLevels] = []
        pos = 0
        while pos < x.size:
            take = min(self.period_n - self._n, x.size - pos)
            if repaired_at.size:
                self._repaired += int(np.count_nonzero((repaired_at >= pos) & (repaired_at < pos + take)))
            self._pending.append(x[pos : pos + take].copy() if take < x.size else x.copy())
            self._n += take
            pos += take
            if self._n == self.period_n:
                period = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
                self._pending = []
                self._accumulate(period)
                done.append(self._close())
        return done

    def _accumulate(self, x: np.ndarray) -> None:
        yc = self._c(x)
        ya = self._a(yc)
        if not self._primed:
            # Start the F averager at the running level, not at -inf (meter switch-on).
            head = ya[: max(1, int(TAU_FAST_S * self.fs))]
            self._fast.reset(float(np.einsum("i,i->", head, head)) / head.size)
            self._primed = True
        self._sum_a2 += float(np.einsum("i,i->", ya, ya))
        joined = np.concatenate([self._a_rest, ya]) if self._a_rest.size else ya
        whole = joined.size - joined.size % self._decim
        self._a_rest = joined[whole:].copy()
        if whole:
            frames = joined[:whole].reshape(-1, self._decim)
            f = self._fast(np.einsum("ij,ij->i", frames, frames) / self._decim)
            self._fmax = max(self._fmax, float(f.max()))
            self._fmin = min(self._fmin, float(f.min()))
        self._cpeak = max(self._cpeak, self._c_peak.peak(yc))
        amax = float(np.abs(x).max())
        self._clipped |= amax >= CLIP_THRESHOLD
        self._nonzero |= amax > 0.0
        sums, counts = self.bank.process(x)
        self._band_sums += sums
        self._band_counts += counts

    def _close(self) -> PeriodLevels:
        with np.errstate(divide="ignore", invalid="ignore"):
            band_ms = np.where(self._band_counts > 0, self._band_sums / np.maximum(self._band_counts, 1), 0.0)
        levels = PeriodLevels(
            start=self.next_period_start,
            period_s=self.period_s,
            laeq=_db(self._sum_a2 / self._n, self.offset),
            lafmax=_db(self._fmax or self._fast.value, self.offset),
            lafmin=_db(self._fmin if math.isfinite(self._fmin) else self._fast.value, self.offset),
            lcpeak=20 * math.log10(max(self._cpeak, 1e-15)) + self.offset,
            bands={k: _db(float(m), self.offset) for k, m in zip(self.bank.keys, band_ms)},
            clipped=self._clipped,
            silent=not self._nonzero,
            repaired=self._repaired,
        )
        self._index += 1
        self._reset_period()
        return levels
