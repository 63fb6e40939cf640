"""Bounded on-disk queue of outgoing *messages* (never audio), one SQLite file.

Every message is written here before it is published and deleted only once the
broker acknowledged it (QoS 1 PUBACK), so a broker outage or a restart of the agent
loses nothing that fits in the bound. When the bound is reached the oldest messages
of the same channel are dropped and counted (``dropped``) and a warning says how
many: a sensor cut off for weeks keeps its most recent data, it never fills the
disk. The file holds JSON of level frames and security events only; nothing in this
module can accept a numpy array.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Channel = Literal["smart", "safe"]
Kind = Literal["frame", "event"]
FILE_NAME = "outbox.sqlite3"


@dataclass(frozen=True)
class Pending:
    id: int
    channel: Channel
    kind: Kind
    topic: str
    payload: str


class OutboxError(RuntimeError):
    """The queue file cannot be opened or written (disk full, permissions...)."""


class Outbox:
    """Append, peek, acknowledge. Single-threaded: the agent's loop owns it."""

    def __init__(self, directory: Path, max_messages: int):
        self.path = Path(directory) / FILE_NAME
        self.max_messages = max_messages
        self.dropped = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "channel TEXT NOT NULL CHECK (channel IN ('smart','safe')), "
                "kind TEXT NOT NULL CHECK (kind IN ('frame','event')), topic TEXT NOT NULL, payload TEXT NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open message queue {self.path}: {exc}") from exc

    def put(self, channel: Channel, kind: Kind, topic: str, payload: str) -> int:
        if not isinstance(payload, str):
            raise TypeError("the outbox stores JSON text only")
        try:
            cur = self._db.execute(
                "INSERT INTO outbox (channel, kind, topic, payload) VALUES (?, ?, ?, ?)", (channel, kind, topic, payload)
            )
            self._enforce_bound(channel)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot queue a {kind} for {topic}: {exc}") from exc
        return int(cur.lastrowid or 0)

    def _enforce_bound(self, channel: Channel) -> None:
        (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        excess = count - self.max_messages
        if excess <= 0:
            return
        self._db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE channel = ? ORDER BY id LIMIT ?)",
            (channel, excess),
        )
        self.dropped += excess
        log.warning("message queue full (%d): dropped the %d oldest %s message(s), %d so far", self.max_messages, excess, channel, self.dropped)

    def pending(self, channel: Channel, limit: int, exclude: set[int] | None = None) -> list[Pending]:
        rows = self._db.execute(
            "SELECT id, channel, kind, topic, payload FROM outbox WHERE channel = ? ORDER BY id LIMIT ?",
            (channel, limit + len(exclude or ())),
        ).fetchall()
        out = [Pending(*r) for r in rows if not exclude or r[0] not in exclude]
        return out[:limit]

    def ack(self, ids: list[int]) -> None:
        if ids:
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def count(self, channel: Channel | None = None) -> int:
        if channel is None:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        return int(self._db.execute("SELECT count(*) FROM outbox WHERE channel = ?", (channel,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()
