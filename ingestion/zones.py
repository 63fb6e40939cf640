"""Which time zones the Lden can be computed in: those whose UTC offset is a whole number of hours.

The hourly aggregates are UTC-aligned (``levels_1h``), and the Lden takes the day,
evening or night period of each hourly bucket from the local hour at which it starts
(``ingestion.aggregates`` / ``ingestion.aggsql``). In a zone at UTC+05:30 every UTC hour
straddles two local hours, so 06:00-18:00 local would be taken as 05:30-17:30 or
06:30-18:30, with no error. Such zones are therefore refused where a sensor's zone (or
the city's default zone) is set, rather than silently giving wrong periods.

The check covers 2000-2100: the ingestion refuses any time before 2000
(``messages.times.EARLIEST``), so older history (e.g. Monrovia's -00:44:30 until 1972)
never meets an aggregate.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from messages.times import EARLIEST

LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
_STEP = timedelta(days=1)
_HOUR = timedelta(hours=1)


@lru_cache(maxsize=256)
def off_hour_offset(name: str) -> tuple[datetime, timedelta] | None:
    """The first instant (UTC) of 2000-2100 at which ``name``'s UTC offset is not whole hours, and that offset.

    None if the offset is whole hours all along. ``name`` must be a known IANA zone.
    The offset is sampled daily (~40 ms a zone, once per process: an offset that held for
    less than a day would be missed, and no zone has had one); at a change, the
    transition is found by bisection to the second.
    """
    zone = ZoneInfo(name)

    def offset(t: datetime) -> timedelta:
        return t.astimezone(zone).utcoffset() or timedelta(0)

    t, current = EARLIEST, offset(EARLIEST)
    while True:
        if current % _HOUR:
            return t, current
        if t >= LATEST:
            return None
        nxt = min(t + _STEP, LATEST)
        after = offset(nxt)
        if after != current:
            lo, hi = t, nxt  # offset(lo) == current != offset(hi): bisect to the transition
            while hi - lo > timedelta(seconds=1):
                mid = lo + timedelta(seconds=(hi - lo) // timedelta(seconds=2))
                lo, hi = (mid, hi) if offset(mid) == current else (lo, mid)
            t, current = hi, offset(hi)
        else:
            t = nxt


def _spell(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def known_zone(name: str) -> str:
    """``name`` if it is an IANA zone of this machine, else a ``ValueError`` naming it."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {name!r}") from exc
    return name


def check_lden_zone(name: str) -> str:
    """``name`` if the Lden periods can be computed in it, else a ``ValueError`` naming the zone and why."""
    found = off_hour_offset(name)
    if found is not None:
        at, offset = found
        raise ValueError(
            f"time zone {name!r} is not supported: its UTC offset is {_spell(offset)} (first on {at:%Y-%m-%d}), not a whole "
            "number of hours, and the Lden day/evening/night periods are taken from UTC-aligned hourly aggregates"
        )
    return name


__all__ = ["LATEST", "check_lden_zone", "known_zone", "off_hour_offset"]
