"""The retry policy every reconnect loop shares."""

from __future__ import annotations

import pytest

from common.backoff import Backoff


def test_a_long_outage_keeps_the_delay_at_its_cap_and_never_overflows():
    """2.0**1024 overflows: after 1024 failed rounds (17 h of broker outage at one a minute) it killed ngsi-sync."""
    backoff = Backoff(initial=0.5, maximum=30.0, jitter=0.2)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert 0.4 <= delays[0] <= 0.6
    assert all(d <= 30.0 * 1.2 for d in delays)
    assert min(delays[100:]) >= 30.0 * 0.8
    assert backoff.attempts == 5000
    backoff.reset()
    assert backoff.next_delay() <= 0.6


@pytest.mark.parametrize(("initial", "maximum", "factor"), [(1.0, 1.0, 2.0), (2.0, 1.0, 2.0), (0.05, 5.0, 1.0)])
def test_degenerate_policies_stay_within_their_bounds(initial, maximum, factor):
    backoff = Backoff(initial=initial, maximum=maximum, factor=factor, jitter=0.0)
    assert all(d <= max(maximum, 0.0) and d == min(maximum, initial) for d in (backoff.next_delay() for _ in range(2000)))
