"""IEC 61260-1:2014 class 1 acceptance limits for fractional-octave band filters.

Table 1 of the standard gives, for octave bands (b = 1), the minimum and maximum
*relative attenuation* (attenuation at a frequency minus attenuation at the exact
midband frequency) at normalised frequencies ``Omega = f / fm`` that are powers of
``G = 10**(3/10)``. For a 1/b-octave filter the same limits apply at the frequencies
given by equation (10) of the standard:

    Omega_b = 1 + (G**(1/(2b)) - 1) / (G**(1/2) - 1) * (Omega_1 - 1)     (Omega_1 >= 1)

and by symmetry at ``1 / Omega_b`` below the midband. For b = 3 this gives the
familiar breakpoints 1.02667, 1.05575, 1.08746, 1.12202 (band edge), 1.29437,
1.88173, 3.05365, 5.39195 (and their reciprocals).

The limits below are class 1 (class 2 is not used: Sonopolis sensors are class 1
meters). ``math.inf`` means "no upper limit".
"""

from __future__ import annotations

import math
from typing import NamedTuple

G = 10 ** (3 / 10)


class Limit(NamedTuple):
    exponent: float  # Omega_1 = G**exponent for octave bands
    min_db: float
    max_db: float


# IEC 61260-1:2014, table 1, class 1 column: relative attenuation limits in dB.
CLASS1_TABLE: tuple[Limit, ...] = (
    Limit(0.0, -0.4, 0.4),
    Limit(1 / 8, -0.4, 0.5),
    Limit(1 / 4, -0.4, 0.7),
    Limit(3 / 8, -0.4, 1.4),
    Limit(1 / 2, 1.2, 5.3),  # band edge (-3 dB nominal)
    Limit(1.0, 16.6, math.inf),
    Limit(2.0, 40.5, math.inf),
    Limit(3.0, 60.0, math.inf),
    Limit(4.0, 70.0, math.inf),
)


def normalised_frequency(exponent: float, b: int = 3) -> float:
    """Omega_b (> 1) for the octave-band breakpoint ``G**exponent`` (equation 10)."""
    omega_1 = G**exponent
    return 1 + (G ** (1 / (2 * b)) - 1) / (G ** (1 / 2) - 1) * (omega_1 - 1)


def class1_points(b: int = 3) -> list[tuple[float, float, float]]:
    """``(Omega, min_db, max_db)`` for both sides of the midband, ascending in Omega."""
    upper = [(normalised_frequency(lim.exponent, b), lim.min_db, lim.max_db) for lim in CLASS1_TABLE]
    lower = [(1 / om, lo, hi) for om, lo, hi in upper[1:]]
    return sorted(lower + upper)


def violations(omegas_and_attenuation: list[tuple[float, float]], b: int = 3, margin_db: float = 0.0) -> list[str]:
    """Human-readable failures of measured relative attenuations (Omega, dB) vs class 1.

    ``margin_db`` tightens both limits (used at design time to keep headroom).
    """
    limits = {round(om, 6): (lo, hi) for om, lo, hi in class1_points(b)}
    out = []
    for om, att in omegas_and_attenuation:
        lo, hi = limits[round(om, 6)]
        if att < lo + margin_db or att > hi - margin_db:
            out.append(f"Omega={om:.5f}: relative attenuation {att:.2f} dB outside [{lo}, {hi}]")
    return out
