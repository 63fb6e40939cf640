"""Bounded on-disk queue of outgoing *messages* (never audio), one SQLite file.

Every message is written here before it is published and deleted only once the
broker acknowledged it (QoS 1 PUBACK), so a broker outage or a restart of the agent
loses nothing that fits in the bound. The bound is *per channel*: when one channel
reaches it, that channel's oldest messages are dropped and counted (``dropped``) and a
warning says how many: at the first drop, then at most once a minute (a full queue drops
at every frame, and a warning a second flooded the gateway's log). A sensor cut off from
the smart broker for weeks keeps its most recent frames and never fills the disk, and
its frames can never push out a security event (one shared bound once did: a full smart
backlog made every new event evict itself). The file holds JSON of level frames and
security events only; nothing in this module can accept a numpy array.

Each ``put`` and each ``ack`` is one transaction: acked row by row (a journal and an
fsync each, ~0.7 ms), the 15 000 rows a broker could confirm at once after an outage
stalled the agent's audio loop for 12 s. The row counts per channel are kept in memory
and rows are read through an index on (channel, id), so neither the bound nor a peek
scans the file.

A message the broker *refused* (its PUBACK carries a failure reason: the ACL denies the
topic, the payload is invalid...) is not delivered and must not be deleted as if it
were, nor block the messages behind it: ``refuse`` moves it, with the reason, to the
``refused`` table of the same file (a dead letter; no other file is ever written, but a
queue file found damaged at the start, kept aside as ``outbox.sqlite3.damaged``), bound
per channel like the queue. ``requeue_refused`` puts such messages back in the queue in
their original order; the agent calls it at each start, so fixing the broker account or
ACL and restarting the agent delivers them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Channel = Literal["smart", "safe"]
Kind = Literal["frame", "event"]
FILE_NAME = "outbox.sqlite3"
DAMAGED_SUFFIX = ".damaged"
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_IDS_PER_STATEMENT = 900  # well under SQLite's limit on bound parameters
DROP_LOG_EVERY_S = 60.0
"""A full queue drops a message at every put (a frame a second): the first drop is logged at once,
then at most one line a minute per channel and table, with what was dropped since the last one."""


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
        self._drops_unlogged: dict[tuple[str, str], int] = {}  # (table, channel) -> dropped since its last warning
        self._drops_logged_at: dict[tuple[str, str], float] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._open()
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorname", "") not in _DAMAGED:
                    raise
                self._set_aside(exc)
                self._open()
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open message queue {self.path}: {exc}") from exc

    def _open(self) -> None:
        """Connect, create what is missing, check the file is whole and count its rows."""
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=DELETE")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "channel TEXT NOT NULL CHECK (channel IN ('smart','safe')), "
                "kind TEXT NOT NULL CHECK (kind IN ('frame','event')), topic TEXT NOT NULL, payload TEXT NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_by_channel ON outbox (channel, id)")
            # Same columns and ids as the queue (ids are never reused: AUTOINCREMENT), plus why and when.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY, channel TEXT NOT NULL, kind TEXT NOT NULL, "
                "topic TEXT NOT NULL, payload TEXT NOT NULL, reason TEXT NOT NULL, refused_at TEXT NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS refused_by_channel ON refused (channel, id)")
            # Damage found now, not at a put in the middle of the audio loop (then at every restart).
            verdict = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                damaged = sqlite3.DatabaseError(f"database disk image is malformed ({verdict})")
                damaged.sqlite_errorname = "SQLITE_CORRUPT"  # as SQLite's own errors say it
                raise damaged
            self._load_counts()
        except BaseException:
            self._db.close()
            raise

    def _set_aside(self, exc: sqlite3.DatabaseError) -> None:
        """Move a damaged queue file (and its journal) aside, replacing an earlier one: the directory stays bounded.

        The queue holds messages that can be lost, the sensor must keep measuring: a file damaged by
        a power cut once failed every start until someone deleted it by hand.
        """
        aside = self.path.with_name(self.path.name + DAMAGED_SUFFIX)
        for suffix in ("", "-journal"):
            src, dst = self.path.with_name(self.path.name + suffix), aside.with_name(aside.name + suffix)
            if src.exists():
                src.replace(dst)
            else:
                dst.unlink(missing_ok=True)  # an earlier damaged file's journal does not belong to this one
        log.error("message queue %s is damaged (%s): moved to %s with the messages it held, which will not be sent; "
                  "starting with an empty queue", self.path, exc, aside)

    def put(self, channel: Channel, kind: Kind, topic: str, payload: str) -> int:
        if not isinstance(payload, str):
            raise TypeError("the outbox stores JSON text only")
        try:
            with self._transaction():
                cur = self._db.execute(
                    "INSERT INTO outbox (channel, kind, topic, payload) VALUES (?, ?, ?, ?)", (channel, kind, topic, payload)
                )
                self._counts[channel] += 1
                self._enforce_bound("outbox", channel)
        except sqlite3.Error as exc:
            self._recount()
            raise OutboxError(f"cannot queue a {kind} for {topic}: {exc}") from exc
        return int(cur.lastrowid or 0)

    def _enforce_bound(self, table: Literal["outbox", "refused"], channel: Channel) -> None:
        counts = self._counts if table == "outbox" else self._refused
        excess = counts[channel] - self.max_messages
        if excess <= 0:
            return
        removed = self._db.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE channel = ? ORDER BY id LIMIT ?)",
            (channel, excess),
        ).rowcount
        counts[channel] -= removed
        self.dropped += removed
        key = (table, channel)
        unlogged = self._drops_unlogged.get(key, 0) + removed
        now = time.monotonic()
        if now - self._drops_logged_at.get(key, -DROP_LOG_EVERY_S) < DROP_LOG_EVERY_S:
            self._drops_unlogged[key] = unlogged  # said in the next line, at most a minute from the last
            return
        self._drops_unlogged[key], self._drops_logged_at[key] = 0, now
        what = "message queue" if table == "outbox" else "store of refused messages"
        log.warning("%s %s full (%d): dropped the %d oldest message(s), %d so far", channel, what, self.max_messages, unlogged, self.dropped)

    def pending(self, channel: Channel, limit: int, after: int = 0) -> list[Pending]:
        """The oldest ``limit`` rows of ``channel`` with an id above ``after``."""
        rows = self._db.execute(
            "SELECT id, channel, kind, topic, payload FROM outbox WHERE channel = ? AND id > ? ORDER BY id LIMIT ?",
            (channel, after, limit),
        ).fetchall()
        return [Pending(*r) for r in rows]

    def ack(self, channel: Channel, ids: list[int]) -> None:
        """Delete the rows of ``channel`` that the broker acknowledged, in one transaction."""
        if not ids:
            return
        try:
            with self._transaction():
                for start in range(0, len(ids), _IDS_PER_STATEMENT):
                    chunk = ids[start : start + _IDS_PER_STATEMENT]
                    marks = ",".join("?" * len(chunk))
                    removed = self._db.execute(
                        f"DELETE FROM outbox WHERE channel = ? AND id IN ({marks})", (channel, *chunk)
                    ).rowcount
                    self._counts[channel] -= removed
        except sqlite3.Error as exc:
            self._recount()
            raise OutboxError(f"cannot remove {len(ids)} delivered {channel} message(s): {exc}") from exc

    def refuse(self, channel: Channel, ids: list[int], reason: str) -> int:
        """Move rows the broker refused out of the queue, keeping them and ``reason``; returns how many moved."""
        if not ids:
            return 0
        try:
            with self._transaction():
                moved = 0
                for start in range(0, len(ids), _IDS_PER_STATEMENT):
                    chunk = ids[start : start + _IDS_PER_STATEMENT]
                    marks = ",".join("?" * len(chunk))
                    self._db.execute(
                        "INSERT INTO refused (id, channel, kind, topic, payload, reason, refused_at) "
                        "SELECT id, channel, kind, topic, payload, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
                        f"FROM outbox WHERE channel = ? AND id IN ({marks})",
                        (reason, channel, *chunk),
                    )
                    moved += self._db.execute(
                        f"DELETE FROM outbox WHERE channel = ? AND id IN ({marks})", (channel, *chunk)
                    ).rowcount
                self._counts[channel] -= moved
                self._refused[channel] += moved
                self._enforce_bound("refused", channel)
        except sqlite3.Error as exc:
            self._recount()
            raise OutboxError(f"cannot set aside {len(ids)} refused {channel} message(s) ({reason}): {exc}") from exc
        return moved

    def requeue_refused(self) -> int:
        """Put every refused message back in the queue, in its original place; returns how many."""
        try:
            with self._transaction():
                moved = self._db.execute(
                    "INSERT INTO outbox (id, channel, kind, topic, payload) SELECT id, channel, kind, topic, payload FROM refused"
                ).rowcount
                self._db.execute("DELETE FROM refused")
                self._load_counts()
                for channel in ("smart", "safe"):
                    self._enforce_bound("outbox", channel)
        except sqlite3.Error as exc:
            self._recount()
            raise OutboxError(f"cannot queue the refused messages again: {exc}") from exc
        return moved

    def count(self, channel: Channel | None = None) -> int:
        return _tally(self._counts, channel)

    def refused_count(self, channel: Channel | None = None) -> int:
        """Messages a broker refused, kept aside (see ``refuse``)."""
        return _tally(self._refused, channel)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            # The counts in memory changed with the statements: they come from the file again, whatever
            # stopped the transaction (a KeyboardInterrupt from SIGTERM too, which no caller catches).
            self._recount()
            raise
        self._db.execute("COMMIT")

    def _read_counts(self, table: Literal["outbox", "refused"] = "outbox") -> dict[str, int]:
        counts = {"smart": 0, "safe": 0}
        counts.update(self._db.execute(f"SELECT channel, count(*) FROM {table} GROUP BY channel").fetchall())
        return counts

    def _load_counts(self) -> None:
        """Both tables' row counts per channel, from the file."""
        self._counts, self._refused = self._read_counts(), self._read_counts("refused")

    def _recount(self) -> None:
        """After a failed statement, the counts come from the file again (it rolled back)."""
        try:
            self._load_counts()
        except sqlite3.Error:
            pass


def _tally(counts: dict[str, int], channel: Channel | None) -> int:
    """One channel's count, or all channels' when ``channel`` is None."""
    return sum(counts.values()) if channel is None else counts[channel]
