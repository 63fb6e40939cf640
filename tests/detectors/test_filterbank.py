"""The third-octave bank meets IEC 61260-1:2014 class 1, measured with sines.

Each check feeds a steady sine through the *whole* multirate chain (anti-alias
filters, decimation, band filter) and reads the band's mean square, so aliasing and
the cascaded anti-alias ripple are part of what is measured, not only one filter's
transfer function. Limits: ``detectors.iec61260`` (table 1, class 1, with the b = 3
normalised frequencies of equation 10).
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.filterbank import ThirdOctaveBank, band_edges_hz
from detectors.iec61260 import class1_points, normalised_frequency
from messages.bands import BAND_KEYS, bands_below, exact_centre_hz


def _band_ms(fs: float, f: float, position: int) -> float:
    """Steady-state mean square of band ``position`` for a unit-mean-square sine at ``f``."""
    bw = exact_centre_hz(position) * 0.23
    dur = max(0.4, 24.0 / bw)
    n = int(dur * fs)
    t = np.arange(n) / fs
    x = np.sqrt(2) * np.sin(2 * np.pi * f * t)
    bank = ThirdOctaveBank(fs)
    bank.process(x[: n // 2])
    sums, counts = bank.process(x[n // 2 :])
    i = bank.positions.index(position)
    return float(sums[i] / counts[i])


def test_normalised_frequencies_for_third_octaves() -> None:
    assert normalised_frequency(1 / 2) == pytest.approx(10 ** (1 / 20), rel=1e-9)  # band edge G**(1/6)
    expected = [1.02667, 1.05575, 1.08746, 1.12202, 1.29437, 1.88173, 3.05365, 5.39195]
    got = [normalised_frequency(e) for e in (1 / 8, 1 / 4, 3 / 8, 1 / 2, 1, 2, 3, 4)]
    assert got == pytest.approx(expected, abs=2e-5)


@pytest.mark.parametrize("fs", [48000, 44100, 16000])
def test_relative_attenuation_within_class1_limits(fs: int) -> None:
    bank = ThirdOctaveBank(fs)
    failures: list[str] = []
    checked = 0
    for position in bank.positions:
        fm = exact_centre_hz(position)
        ref = _band_ms(fs, fm, position)
        for omega, lo, hi in class1_points():
            f = fm * omega
            if omega == 1.0 or f >= fs / 2 * 0.999:
                continue
            att = 10 * np.log10(ref / max(_band_ms(fs, f, position), 1e-300))
            checked += 1
            if not lo <= att <= hi:
                failures.append(f"{BAND_KEYS[position]} Hz at Omega={omega:.5f}: {att:.2f} dB not in [{lo}, {hi}]")
    assert not failures, "\n".join(failures)
    assert checked > 10 * len(bank.positions)


@pytest.mark.parametrize("fs", [48000, 16000])
def test_midband_gain_is_unity(fs: int) -> None:
    """A sine at the exact midband reads its own level (within 0.1 dB) in every band."""
    bank = ThirdOctaveBank(fs)
    for position in bank.positions:
        level = 10 * np.log10(_band_ms(fs, exact_centre_hz(position), position))
        assert abs(level) < 0.1, f"{BAND_KEYS[position]} Hz reads {level:+.3f} dB"


def test_bands_above_nyquist_are_omitted() -> None:
    assert ThirdOctaveBank(48000).keys == BAND_KEYS
    low = ThirdOctaveBank(16000)
    assert low.keys == bands_below(8000)
    assert low.keys[-1] == "6300"
    assert all(band_edges_hz(p)[1] < 8000 for p in low.positions)


def test_multirate_plan_decimates_low_bands() -> None:
    bank = ThirdOctaveBank(48000)
    assert bank.stage_rates[0] == 48000
    assert bank.stage_rates[-1] <= 250  # the 25 Hz band is filtered at a few hundred Hz


def test_streaming_equals_one_shot() -> None:
    fs = 48000
    x = np.random.default_rng(7).standard_normal(fs).astype(np.float32)
    one_sums, one_counts = ThirdOctaveBank(fs).process(x)
    bank = ThirdOctaveBank(fs)
    cuts = [0, 1, 999, 1000, 24001, 33333, fs]
    sums = np.zeros_like(one_sums)
    counts = np.zeros_like(one_counts)
    for a, b in zip(cuts, cuts[1:]):
        s, c = bank.process(x[a:b])
        sums += s
        counts += c
    np.testing.assert_array_equal(counts, one_counts)
    np.testing.assert_allclose(sums, one_sums, rtol=1e-4)


def test_white_noise_band_levels_follow_bandwidth() -> None:
    """White noise: band power proportional to bandwidth (+1 dB per third-octave band)."""
    fs = 48000
    x = np.random.default_rng(11).standard_normal(fs * 8)
    bank = ThirdOctaveBank(fs)
    bank.process(x[:fs])
    sums, counts = bank.process(x[fs:])
    levels = 10 * np.log10(sums / counts)
    expected = 10 * np.log10([(band_edges_hz(p)[1] - band_edges_hz(p)[0]) / (fs / 2) for p in bank.positions])
    # Butterworth order 3 equivalent-noise bandwidth = 1.047 x the nominal one (+0.2 dB).
    dev = levels - expected - 10 * np.log10(np.pi / 3)
    assert np.all(np.abs(dev[8:]) < 0.5), dev  # above 160 Hz, 7 s of noise averages well
    assert np.all(np.abs(dev) < 1.5), dev


def test_anti_alias_filter_covers_the_next_stage_and_rejects_aliases() -> None:
    """Each decimation keeps the next stage's highest band flat and aliases >= 80 dB down.

    The plan puts bands with centres up to R_out/3 in the stage after a decimation, so
    the low-pass must be flat (0.01 dB ripple) up to that band's upper edge and reach
    80 dB at the new Nyquist, where aliases start folding back.
    """
    from scipy import signal

    from detectors.filterbank import AA_STOP_DB, _aa_sos

    bank = ThirdOctaveBank(48000)
    rates = bank.stage_rates
    for stage, (rate_in, rate_out) in enumerate(zip(rates, rates[1:])):
        below = [p for s in bank._stages[stage + 1 :] for p in (b.position for b in s.bands)]
        top_edge = max(band_edges_hz(p)[1] for p in below)
        f_pass = np.linspace(0, top_edge, 200)
        _, h = signal.sosfreqz(_aa_sos(), worN=2 * np.pi * f_pass / rate_in)
        ripple = 20 * np.log10(np.abs(h))
        assert ripple.min() > -0.011 and ripple.max() < 0.011, (rate_in, top_edge)
        f_stop = np.linspace(rate_out / 2, rate_in / 2, 200)
        _, h = signal.sosfreqz(_aa_sos(), worN=2 * np.pi * f_stop / rate_in)
        assert 20 * np.log10(np.abs(h).max()) <= -AA_STOP_DB + 0.01


def test_top_stage_holds_only_bands_that_cannot_be_decimated() -> None:
    """Bands up to 8 kHz run at 24 kHz or lower; only 10-20 kHz run at 48 kHz."""
    bank = ThirdOctaveBank(48000)
    top = [BAND_KEYS[b.position] for b in bank._stages[0].bands]
    assert sorted(top, key=float) == ["10000", "12500", "16000", "20000"]
