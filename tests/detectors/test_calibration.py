"""Calibration from a calibrator recording, and the `sonopolis calibrate` command."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from detectors.calibration import CalibrationError, derive_offset
from detectors.meter import SoundLevelMeter
from simulators.scene import calibrator_tone
from sonopolis.cli import app


@pytest.mark.parametrize("reference", [94.0, 114.0])
@pytest.mark.parametrize("fs", [48000, 16000])
def test_offset_recovers_the_virtual_microphone(reference: float, fs: int) -> None:
    true_offset = 121.7
    rec = calibrator_tone(4.0, fs, level_db=reference, offset_db=true_offset, noise_db=60.0)
    cal = derive_offset(rec, fs, reference)
    assert cal.offset_db == pytest.approx(true_offset, abs=0.05)
    # With that offset the meter reads the calibrator's level.
    meter = SoundLevelMeter(fs, cal.offset_db, datetime(2026, 1, 1, tzinfo=timezone.utc))
    last = meter.feed(calibrator_tone(3.0, fs, reference, true_offset, noise_db=None))[-1]
    assert last.bands["1000"] == pytest.approx(reference, abs=0.1)
    assert last.laeq == pytest.approx(reference, abs=0.1)


def test_wrong_tone_noise_and_instability_are_refused() -> None:
    fs = 48000
    t = np.arange(fs * 4) / fs
    with pytest.raises(CalibrationError, match="not the calibrator's 1 kHz"):
        derive_offset(0.05 * np.sin(2 * np.pi * 250 * t), fs)
    with pytest.raises(CalibrationError, match="too noisy"):
        derive_offset(calibrator_tone(4.0, fs, 94.0, 120.0, noise_db=90.0), fs)
    wobbly = 0.05 * np.sin(2 * np.pi * 1000 * t) * (1 + 0.3 * (t > 2.5))
    with pytest.raises(CalibrationError, match="varies"):
        derive_offset(wobbly, fs)
    with pytest.raises(CalibrationError, match="clipped"):
        derive_offset(np.clip(2 * np.sin(2 * np.pi * 1000 * t), -1, 1), fs)
    with pytest.raises(CalibrationError, match="too short"):
        derive_offset(0.05 * np.sin(2 * np.pi * 1000 * t[: fs]), fs)
    holed = 0.05 * np.sin(2 * np.pi * 1000 * t)
    holed[fs] = np.nan  # was refused as "dominant frequency is 0 Hz"
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        derive_offset(holed, fs)


def test_calibrate_command(tmp_path: Path) -> None:
    wav = tmp_path / "cal.wav"
    sf.write(wav, calibrator_tone(4.0, 48000, 114.0, 125.0, noise_db=55.0), 48000, subtype="PCM_24")
    result = CliRunner().invoke(app, ["calibrate", str(wav), "--reference-db", "114"])
    assert result.exit_code == 0, result.output
    value = float(result.output.strip().splitlines()[-1].split("=")[1])
    assert value == pytest.approx(125.0, abs=0.05)
    bad = CliRunner().invoke(app, ["calibrate", str(wav), "--reference-db", "100"])
    assert bad.exit_code == 2


@pytest.mark.parametrize("fs", [16000, 32000, 44100, 48000])
def test_tone_to_noise_is_the_recordings_not_the_band_filters(fs: int) -> None:
    """The 1 kHz band filter's own small loss is not noise: a pure tone reads its exact level with
    no noise, and broadband noise a known number of dB down reads as that many dB.

    Before, the filter's ~0.02 dB loss counted as noise: a perfect tone read 23-25 dB above noise
    and a recording with white noise 22 dB down was refused as too noisy at 32 and 48 kHz."""
    t = np.arange(4 * fs) / fs
    amplitude = 0.1 * np.sqrt(2)  # mean square 0.01: -20 dB re full scale
    clean = derive_offset(amplitude * np.sin(2 * np.pi * 1000 * t + 0.7), fs)
    assert clean.tone_level_dbfs == pytest.approx(-20.0, abs=0.005)
    assert clean.tone_to_noise_db >= 50.0
    rng = np.random.default_rng(1)
    for down_db in (30.0, 22.0):
        noisy = amplitude * np.sin(2 * np.pi * 1000 * t) + rng.normal(0.0, np.sqrt(0.01 * 10 ** (-down_db / 10)), t.size)
        cal = derive_offset(noisy, fs)
        assert cal.tone_to_noise_db == pytest.approx(down_db, abs=0.5)
        assert cal.tone_level_dbfs == pytest.approx(-20.0, abs=0.02)
    with pytest.raises(CalibrationError, match="too noisy"):
        derive_offset(amplitude * np.sin(2 * np.pi * 1000 * t) + rng.normal(0.0, np.sqrt(0.01 * 10 ** (-1.8)), t.size), fs)
