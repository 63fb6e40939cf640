"""IEC 61260-1 base-10 third-octave nominal centre frequencies used on the wire.

The wire carries band levels keyed by the *nominal* centre (as printed on a sound
level meter) because that is what people read; the DSP uses the exact base-10
midband frequencies ``1000 * 10**(x/10)``. Band index ``x`` runs from -16 (25 Hz)
to +13 (20 kHz): 30 bands. Sensors sampling at 16 kHz omit the bands above Nyquist.
"""

from __future__ import annotations

NOMINAL_CENTRES_HZ: tuple[float, ...] = (
    25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200,
    250, 315, 400, 500, 630, 800, 1000, 1250, 1600, 2000,
    2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000,
)
"""Nominal centres, 25 Hz .. 20 kHz, in ascending order (30 bands)."""

BAND_INDEX_MIN = -16
"""Base-10 band number of 25 Hz: exact centre = 1000 * 10**(x/10)."""

N_BANDS = len(NOMINAL_CENTRES_HZ)


def band_key(nominal_hz: float) -> str:
    """The JSON key of a band: ``"31.5"``, ``"1000"`` (no trailing ``.0``)."""
    return f"{nominal_hz:g}"


BAND_KEYS: tuple[str, ...] = tuple(band_key(f) for f in NOMINAL_CENTRES_HZ)
BAND_POSITION: dict[str, int] = {k: i for i, k in enumerate(BAND_KEYS)}


def exact_centre_hz(position: int) -> float:
    """Exact base-10 midband frequency of the band at ``position`` (0 = 25 Hz)."""
    return 1000.0 * 10.0 ** ((position + BAND_INDEX_MIN) / 10.0)


def bands_below(nyquist_hz: float) -> tuple[str, ...]:
    """Band keys whose upper band edge lies below ``nyquist_hz``.

    A band is only measurable when its whole passband is below Nyquist; the
    upper edge is ``fm * 10**(1/20)``.
    """
    return tuple(
        k for i, k in enumerate(BAND_KEYS) if exact_centre_hz(i) * 10 ** (1 / 20) < nyquist_hz
    )
