"""Topic layout shared by both brokers: ``<prefix>/<sensor_id>``, one level, nothing else."""

from __future__ import annotations

SENSOR_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""A sensor id: lower-case letters, digits, ``_`` and ``-``; one topic level, a database key."""


def sensor_id_after(prefix: str, topic: str) -> str | None:
    """The sensor id of ``<prefix>/<sensor_id>``; None for any other shape (no wildcards, no sub-levels)."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    rest = topic[len(head):]
    return rest if rest and "/" not in rest else None
