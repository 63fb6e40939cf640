"""The ``Accept`` header's q-values, for the smart side's two content negotiations.

The open API chooses between CSV and JSON (``api.render``) and the NGSI-LD context
source between ``application/json`` and ``application/ld+json`` (``ngsi.context_source``).
Both follow RFC 9110 §12.5.1: the most specific media range that matches a format gives
its quality, so ``text/csv;q=0, */*`` refuses CSV although ``*/*`` would take it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

NO_MATCH = -1
"""Specificity when no range of the header matches the format."""


def accepted(accept: str) -> list[tuple[str, float]]:
    """(media range, q) of each element of an ``Accept`` header, as written; a malformed q counts as 0.

    Callers lower-case the header first: media types are case-insensitive.
    """
    out = []
    for part in accept.split(","):
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media.strip():
            out.append((media.strip(), q))
    return out


def quality(ranges: list[tuple[str, float]], specific: Callable[[str], bool], partial: Collection[str]) -> tuple[float, int]:
    """(q, specificity) of a format: the highest q among the most specific ranges that match it.

    Specificity 2 is a range ``specific`` accepts, 1 one of ``partial`` (``text/*``...),
    0 ``*/*``; ``(0.0, NO_MATCH)`` when none matches.
    """
    for level, match in ((2, specific), (1, lambda m: m in partial), (0, lambda m: m == "*/*")):
        qs = [q for m, q in ranges if match(m)]
        if qs:
            return max(qs), level
    return 0.0, NO_MATCH
