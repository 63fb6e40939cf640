"""The 4x oversampled peak behind LCpeak: exact on samples, close to the crest between them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from detectors.true_peak import CANDIDATES, TruePeak, interpolator, oversampled_bound_db

# Paul Kellet's "economy" pink-noise filter (-3 dB/octave within 0.5 dB, 10 Hz - 20 kHz at 48 kHz):
# city noise falls with frequency like this or faster.
_PINK_B = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
_PINK_A = [1.0, -2.494956002, 2.017265875, -0.522189400]


def _every_point(x: np.ndarray) -> float:
    """Reference: all four phases of every window of ``x`` whose crest has full context."""
    taps = interpolator().shape[0]
    half = taps // 2
    windows = sliding_window_view(np.concatenate([np.zeros(half + 1), x]), taps)[: x.size - half + 1]
    return max(float(np.abs(x).max()), float(np.abs(windows @ interpolator()).max()))


def test_phase_zero_reproduces_the_samples_exactly() -> None:
    phases = interpolator()
    centre = phases.shape[0] // 2
    expected = np.zeros(phases.shape[0])
    expected[centre] = 1.0
    assert phases[:, 0] == pytest.approx(expected, abs=1e-15)
    # The other phases pass DC (a constant reads as itself) within 0.001 dB.
    assert phases.sum(axis=0) == pytest.approx(np.ones(4), rel=1e-4)


@pytest.mark.parametrize("fs", [16000, 32000, 44100, 48000])
@pytest.mark.parametrize("f_over_fs", [1000 / 48000, 0.1, 0.2, 0.3, 0.4])
def test_a_tone_reads_within_the_4x_bound_at_any_sampling_phase(fs: int, f_over_fs: float) -> None:
    f = f_over_fs * fs
    worst_sample, worst_peak = 0.0, 0.0
    for phase in np.arange(16) / 16:
        x = np.sin(2 * np.pi * f * (np.arange(fs // 10) + phase) / fs)
        peak = TruePeak().peak(x)
        assert 20 * math.log10(peak) <= 0.01  # no overshoot: the interpolator's ripple is < 0.01 dB
        worst_peak = min(worst_peak, 20 * math.log10(peak))
        worst_sample = min(worst_sample, 20 * math.log10(np.abs(x).max()))
    assert worst_peak >= oversampled_bound_db(f, fs) - 0.01
    assert worst_peak >= worst_sample  # never worse than reading samples


def test_a_crest_between_two_samples_is_found_where_the_samples_miss_it() -> None:
    """An 8 kHz one-cycle burst at 48 kHz whose crests fall between samples.

    Its abrupt ends spread it up to Nyquist, where 12 taps per phase interpolate less
    well than a long filter: the reading is 0.2 dB under the band-limited crest, where
    the samples are 1.8 dB under.
    """
    fs, f = 48000, 8000.0
    t = (np.arange(4800) - 2400) / fs  # samples at 0, 1/6, 2/6... of the cycle: its crest (1.5) falls between two
    burst = np.where((t >= 0) & (t < 1 / f), np.sin(2 * np.pi * f * t), 0.0)
    crest = np.abs(signal.resample_poly(burst, 64, 1)).max()  # the band-limited crest, read 64x
    sample_db = 20 * math.log10(np.abs(burst).max() / crest)
    peak_db = 20 * math.log10(TruePeak().peak(burst) / crest)
    assert sample_db < -1.5
    assert -0.25 <= peak_db <= 0.01, peak_db


@pytest.mark.parametrize("seed", range(10))
def test_city_like_noise_reads_what_interpolating_every_point_reads(seed: int) -> None:
    """Only the crests of the loudest chunks are interpolated; on pink noise that is all that matters."""
    x = signal.lfilter(_PINK_B, _PINK_A, np.random.default_rng(seed).standard_normal(48000))
    assert TruePeak().peak(x) == pytest.approx(_every_point(x), rel=1e-12)


def test_white_noise_never_reads_below_its_samples() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        x = rng.standard_normal(48000)
        peak = TruePeak(candidates=CANDIDATES).peak(x)
        assert np.abs(x).max() <= peak <= _every_point(x) * (1 + 1e-12)


def test_the_first_crests_of_a_block_use_the_previous_blocks_samples() -> None:
    x = signal.lfilter(_PINK_B, _PINK_A, np.random.default_rng(11).standard_normal(9600))
    x[4800 : 4800 + 2] = 8.0  # the loudest crest lies between the first two samples of the second block
    streamed = TruePeak()
    streamed.peak(x[:4800])
    second = streamed.peak(x[4800:])
    assert second == pytest.approx(_every_point(x), rel=1e-12)
    assert second > 9.0  # band-limited, two equal samples have a taller crest between them
    cold = TruePeak().peak(x[4800:])  # same samples without the context before them
    assert cold != pytest.approx(second, rel=1e-6)


def test_a_crest_in_the_last_samples_of_a_block_is_read_on_its_samples_only() -> None:
    """Interpolating there would need samples that have not arrived; the next block does not claim it."""
    x = np.zeros(1000)
    x[-3:] = [0.9, -1.0, 0.9]  # a crest at Nyquist-ish, tallest between samples
    meter = TruePeak()
    assert meter.peak(x) == 1.0
    assert meter.peak(np.zeros(1000)) == 0.0


def test_silence_and_empty_blocks_read_zero() -> None:
    meter = TruePeak()
    assert meter.peak(np.zeros(0)) == 0.0
    assert meter.peak(np.zeros(480)) == 0.0
