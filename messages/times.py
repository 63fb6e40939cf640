"""The one rule for times on the wire: timezone-aware, expressible in UTC, not before 2000.

Why a lower bound: a sensor whose clock was never set (no NTP yet after a power cut)
stamps 1970; such data is refused with the reason instead of landing in the city's
history. Why catch ``OverflowError``: an offset near year 1 ("0001-01-01T00:00+01:00")
cannot be converted to UTC, and pydantic turns only ``ValueError`` into a validation
error, so the bare conversion once escaped the parser and stopped the ingestion.
"""

from __future__ import annotations

from datetime import datetime, timezone

EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)


def utc(value: datetime, field: str) -> datetime:
    """``value`` in UTC, or a ``ValueError`` naming ``field`` and what is wrong."""
    if value.tzinfo is None:
        raise ValueError(f"{field} must carry a UTC offset (e.g. '2026-11-23T10:00:00Z')")
    try:
        converted = value.astimezone(timezone.utc)
    except OverflowError as exc:
        raise ValueError(f"{field} {value.isoformat()} cannot be expressed in UTC") from exc
    if converted < EARLIEST:
        raise ValueError(f"{field} {converted.isoformat()} is before {EARLIEST:%Y-%m-%d}: is the sensor's clock set?")
    return converted
