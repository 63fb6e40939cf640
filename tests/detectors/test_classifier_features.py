"""Log-mel features and onset estimation: values, not just shapes."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import features
from detectors.onset import estimate_onset

SR = features.SAMPLE_RATE


def tone(freq: float, seconds: float = 1.0, amplitude: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_window_geometry_is_whole_frame_hops() -> None:
    # Windows every 0.5 s must start on the 10 ms frame grid, or stream/file would differ.
    assert features.WINDOW_HOP % features.FRAME_HOP == 0
    assert features.WINDOW_FRAMES == 97
    starts = features.window_starts(int(3.2 * SR))
    assert starts.tolist() == [0, 8000, 16000, 24000, 32000]
    assert features.window_starts(SR - 1).size == 0


def test_feature_shape_and_dtype() -> None:
    windows = np.stack([tone(440.0), tone(2000.0), np.zeros(SR, np.float32)])
    x = features.window_features(windows)
    assert x.shape == (3, 1, features.N_MELS, features.WINDOW_FRAMES)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3150.0, 6000.0])
def test_pure_tone_lands_in_its_mel_band(freq: float) -> None:
    log_mel = features.window_log_mel(tone(freq)[None, :])[0]
    band = int(np.argmax(log_mel.mean(axis=1)))
    centres = features.mel_band_centres()
    expected = int(np.argmin(np.abs(centres - freq)))
    assert abs(band - expected) <= 1, (centres[band], freq)
    # The tone stands far above the other bands (no leakage across the spectrum).
    spectrum = log_mel.mean(axis=1)
    far = np.abs(np.arange(features.N_MELS) - band) > 6
    assert spectrum[band] - spectrum[far].max() > 40.0


def test_level_moves_log_mel_by_the_gain_and_leaves_model_input_unchanged() -> None:
    rng = np.random.default_rng(0)
    noise = (0.01 * rng.standard_normal(SR)).astype(np.float32)
    loud = noise * 10.0  # +20 dB
    a = features.window_log_mel(noise[None])
    b = features.window_log_mel(loud[None])
    # float32 FFT: cells 40 dB below the window's mean carry a few hundredths of a dB of rounding.
    assert np.median(np.abs(b - a - 20.0)) < 1e-3
    assert np.abs(b - a - 20.0).max() < 0.1
    assert np.abs(features.window_features(noise[None]) - features.window_features(loud[None])).max() < 0.005


def test_resampling_from_48k_keeps_the_tone() -> None:
    audio = features.resample_to_model_rate(tone(1000.0, 2.0, sr=48_000), 48_000)
    assert audio.size == 2 * SR
    log_mel = features.window_log_mel(audio[None, :SR])[0]
    centres = features.mel_band_centres()
    assert abs(centres[int(np.argmax(log_mel.mean(axis=1)))] - 1000.0) < 60.0


def test_bad_audio_is_refused_with_a_reason() -> None:
    with pytest.raises(features.FeatureError, match="mono"):
        features.check_audio(np.zeros((2, 100), np.float32))
    with pytest.raises(features.FeatureError, match="NaN"):
        features.check_audio(np.array([0.0, np.nan], np.float32))
    with pytest.raises(features.FeatureError, match="float"):
        features.check_audio(np.zeros(10, np.int16))


def test_level_dbfs_of_a_full_scale_sine() -> None:
    assert features.level_dbfs(tone(1000.0, amplitude=1.0)) == pytest.approx(-3.01, abs=0.02)


def impulse_in_noise(onset: int, snr_db: float, seed: int, rise: int = 0) -> np.ndarray:
    """Background noise with a gunshot-like burst (fast rise, exponential decay) at ``onset``."""
    rng = np.random.default_rng(seed)
    n = 2 * SR
    audio = 0.003 * rng.standard_normal(n)
    burst_len = 4000
    envelope = np.exp(-np.arange(burst_len) / 600.0)
    if rise:
        envelope[:rise] *= np.linspace(0.0, 1.0, rise)
    burst = rng.standard_normal(burst_len) * envelope
    burst *= 0.003 * 10 ** (snr_db / 20) / np.sqrt(np.mean(burst[:800] ** 2))
    audio[onset : onset + burst_len] += burst
    return audio.astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("snr_db", [10.0, 20.0, 40.0])
def test_onset_of_an_impulse_within_a_millisecond(seed: int, snr_db: float) -> None:
    onset = int(np.random.default_rng(100 + seed).integers(2000, 30000))
    audio = impulse_in_noise(onset, snr_db, seed)
    found = estimate_onset(audio, 0, audio.size)
    assert abs(found - onset) <= 16, f"onset off by {(found - onset) / SR * 1000:.2f} ms"


def test_onset_of_a_sound_with_a_2ms_rise_is_within_2ms() -> None:
    audio = impulse_in_noise(12_345, 30.0, seed=9, rise=32)
    found = estimate_onset(audio, 0, audio.size)
    assert abs(found - 12_345) <= 32


def test_sfx_front_end_resamples_with_scipys_own_filter_designed_once() -> None:
    """The cached FIR must be exactly the one resample_poly designs itself, so features are unchanged."""
    from scipy.signal import resample_poly

    windows = np.random.default_rng(3).standard_normal((2, features.WINDOW_SAMPLES)).astype(np.float32)
    designed_each_call = resample_poly(windows, 441, 160, axis=1)
    cached = resample_poly(windows, 441, 160, axis=1, window=features._sfx_resampling_filter())
    assert np.array_equal(cached, designed_each_call)
    assert features._sfx_resampling_filter() is features._sfx_resampling_filter()
    assert not features._sfx_resampling_filter().flags.writeable
