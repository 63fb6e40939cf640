"""Two PostgreSQL facts both sides' writers need: what text it can store, which errors mean "unavailable".

Text: PostgreSQL ``text`` cannot hold NUL, and UTF-8 cannot encode a lone surrogate.
A rejection reason quotes the offending field and a JSON key ``"\\u0000"`` is a real NUL
there; written as is, the database refused the quarantine row, and the writer (smart
ingestion, safe bridge) stopped on a message it could neither store nor skip.

Errors: a database that is down, restarting or failing over answers with more than
``OperationalError``. A standby not yet promoted refuses writes with
``ReadOnlySqlTransaction`` (an ``InternalError``); treated as a data error, it stopped
the bridge's intake for good during a failover. These are retried, never quarantined.
"""

from __future__ import annotations

import psycopg
from psycopg import errors

UNAVAILABLE = (
    psycopg.OperationalError,  # connection refused or lost, admin shutdown, cannot connect now
    psycopg.InterfaceError,  # the connection object is closed
    errors.ReadOnlySqlTransaction,  # a standby during failover
)


def storable(text: str, max_chars: int) -> str:
    """``text`` as a ``text`` column can hold it: no NUL, no lone surrogate, at most ``max_chars``."""
    return text[:max_chars].encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\ufffd")


def storable_payload(payload: bytes, max_bytes: int) -> str:
    """Printable, storable text of at most ``max_bytes`` bytes of a raw message."""
    return payload[:max_bytes].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
