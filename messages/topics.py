"""Topic layout shared by both brokers: ``<prefix>/<sensor_id>``, one level, nothing else."""

from __future__ import annotations


def sensor_id_after(prefix: str, topic: str) -> str | None:
    """The sensor id of ``<prefix>/<sensor_id>``; None for any other shape (no wildcards, no sub-levels)."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    rest = topic[len(head):]
    return rest if rest and "/" not in rest else None
