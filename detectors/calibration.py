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

    band, total = _band_and_total(x, sample_rate)
    levels = [10 * math.log10(max(b, 1e-30)) for b in band]
    # The class 1 band filter passes a 1 kHz tone with a small loss (~0.02 dB here), which is
    # neither the tone's level nor noise: divide it out, measured on a pure tone at the same
    # frequency through the same bank. Counted as noise, it capped a perfect calibrator at
    # ~23 dB above noise and refused recordings whose noise was 22 dB down.
    ref_band, ref_total = _band_and_total(np.sqrt(2) * np.sin(2 * np.pi * peak_hz * np.arange(x.size) / sample_rate), sample_rate)
    gain = float(np.mean(ref_band) / np.mean(ref_total))
    tone = float(np.mean(band)) / gain
    noise = max(float(np.mean(total)) - tone, 1e-30)
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


def _band_and_total(x: np.ndarray, sample_rate: int) -> tuple[list[float], list[float]]:
    """Mean square of the 1 kHz third-octave band and of the whole signal, per segment after the settling time."""
    bank = ThirdOctaveBank(sample_rate)
    k = bank.keys.index("1000")
    settle = int(SETTLE_S * sample_rate)
    bank.process(x[:settle])
    body = x[settle:]
    seg = int(SEGMENT_S * sample_rate)
    band, total = [], []
    for i in range(0, body.size - seg + 1, seg):
        sums, counts = bank.process(body[i : i + seg])
        band.append(float(sums[k] / counts[k]))
        total.append(float(np.mean(body[i : i + seg] ** 2)))
    return band, total
