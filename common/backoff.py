"""Capped exponential backoff with jitter, shared by every reconnect/retry loop.

One policy object instead of ad-hoc ``sleep(5)`` loops: outages of a broker, the
database or a camera are ridden out with bounded, de-synchronised retries.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``next_delay()`` grows ``initial * factor**n`` up to ``maximum``, with ±``jitter``."""

    initial: float = 0.05
    maximum: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2
    _attempt: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def next_delay(self) -> float:
        try:
            grown = self.initial * self.factor**self._attempt
        except OverflowError:  # 2.0**1024, after 1024 failed rounds (17 h of outage at one a minute): it once killed ngsi-sync
            grown = math.inf
        base = min(self.maximum, grown)
        self._attempt += 1
        return max(0.0, base * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt
