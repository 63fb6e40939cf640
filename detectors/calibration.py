"""Sensitivity calibration from a recording of an acoustic calibrator (94 or 114 dB, 1 kHz).

The offset is what turns the recording's level in dB re full scale (mean square of
1.0 = 0 dB, the meter's convention) into the calibrator's sound pressure level:

    calibration_offset_db = reference_db - L_1kHz-band(recording)

The level is read in the 1 kHz third-octave band of the class 1 filter bank, so
wind or traffic noise around the calibrator does not bias it; the recording is
refused (with the reason) when the tone is not at 1 kHz, is unstable (coupler not
seated), is buried in noise, or is clipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detectors.filterbank import ThirdOctaveBank

SETTLE_S = 0.5
SEGMENT_S = 0.125
MIN_DURATION_S = 2.0
MAX_SPREAD_DB = 0.3
MIN_TONE_TO_NOISE_DB = 20.0
REFERENCE_LEVELS_DB = (94.0, 114.0)


class CalibrationError(ValueError):
    """The recording cannot calibrate the sensor; the message says why."""


@dataclass(frozen=True)
class Calibration:
    offset_db: float
    reference_db: float
    tone_level_dbfs: float
    tone_frequency_hz: float
    spread_db: float
    tone_to_noise_db: float


def derive_offset(samples: np.ndarray, sample_rate: int, reference_db: float = 94.0) -> Calibration:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise CalibrationError(f"expected mono audio, got shape {x.shape}")
    if x.size < (SETTLE_S + MIN_DURATION_S) * sample_rate:
        raise CalibrationError(f"recording too short: need at least {SETTLE_S + MIN_DURATION_S:.1f} s of calibrator tone")
    if not np.isfinite(x).all():
        raise CalibrationError("recording contains NaN or infinite samples: record it again")
    if np.max(np.abs(x)) >= 0.999:
        raise CalibrationError("recording is clipped: lower the input gain and record again")
    body = x[int(SETTLE_S * sample_rate) :]

    spectrum = np.abs(np.fft.rfft(body * np.hanning(body.size)))
    peak_hz = float(np.argmax(spectrum) * sample_rate / body.size)
    if not 950 <= peak_hz <= 1050:
        raise CalibrationError(f"dominant frequency is {peak_hz:.0f} Hz, not the calibrator's 1 kHz")

    bank = ThirdOctaveBank(sample_rate)
    k = bank.keys.index("1000")
    bank.process(x[: int(SETTLE_S * sample_rate)])
    seg = int(SEGMENT_S * sample_rate)
    levels = []
    total = 0.0
    band_total = 0.0
    for i in range(0, body.size - seg + 1, seg):
        sums, counts = bank.process(body[i : i + seg])
        levels.append(10 * math.log10(max(sums[k] / counts[k], 1e-30)))
        band_total += sums[k] / counts[k]
        total += float(np.mean(body[i : i + seg] ** 2))
    tone = band_total / len(levels)
    noise = max(total / len(levels) - tone, 1e-30)
    tnr = 10 * math.log10(tone / noise)
    if tnr < MIN_TONE_TO_NOISE_DB:
        raise CalibrationError(f"tone only {tnr:.1f} dB above the rest of the spectrum (< {MIN_TONE_TO_NOISE_DB} dB): too noisy")
    spread = max(levels) - min(levels)
    if spread > MAX_SPREAD_DB:
        raise CalibrationError(f"tone level varies by {spread:.2f} dB (> {MAX_SPREAD_DB} dB): is the calibrator seated on the microphone?")
    tone_dbfs = 10 * math.log10(tone)
    return Calibration(
        offset_db=round(reference_db - tone_dbfs, 2),
        reference_db=reference_db,
        tone_level_dbfs=round(tone_dbfs, 2),
        tone_frequency_hz=round(peak_hz, 1),
        spread_db=round(spread, 3),
        tone_to_noise_db=round(min(tnr, 99.0), 1),
    )
