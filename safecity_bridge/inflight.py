"""The bridge's bound on messages held in memory: received from the broker, not yet finished.

Why a bound of its own: MQTT v5 Receive Maximum asks the broker for at most that many
unacknowledged messages in flight to us, but mosquitto 2.0.11 honours it only until
the first PUBACK, then sends everything it has queued. So each message takes a place
here before it is handed to the asyncio loop, and gives it back when the service has
committed or quarantined it. When no place is free, paho's network thread waits: it
stops reading the socket, TCP pushes back on the broker, and the broker's persistent
queue keeps the rest. A message is never dropped for want of a place; it is waited for,
or, once the bound is closed on stop, left unacknowledged for the broker to deliver to
the next bridge.

The network thread waits only on :meth:`InFlight.release` (called from the loop) or
:meth:`InFlight.close` (called by stop), never on the loop itself, so a loop that is
busy, stopping or closed cannot deadlock with it.
"""

from __future__ import annotations

import itertools
import threading


class InFlight:
    """At most ``limit`` messages between their reception and their ack; thread-safe."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1 message, got {limit}")
        self.limit = limit
        self._cond = threading.Condition()
        self._held: set[int] = set()
        self._tickets = itertools.count(1)
        self._closed = False
        self.peak = 0
        """Most messages held at once (tests, logs): never above ``limit``."""
        self.waits = 0
        """How often the network thread found the bound full and had to wait for a place."""

    @property
    def held(self) -> int:
        with self._cond:
            return len(self._held)

    def admit(self) -> int | None:
        """Take a place for one message and return its ticket, waiting while all are taken.

        ``None`` once :meth:`close` was called: the caller must then leave its message
        unacknowledged (the broker delivers it again).
        """
        with self._cond:
            if len(self._held) >= self.limit and not self._closed:
                self.waits += 1
                self._cond.wait_for(lambda: len(self._held) < self.limit or self._closed)
            if self._closed:
                return None
            ticket = next(self._tickets)
            self._held.add(ticket)
            self.peak = max(self.peak, len(self._held))
            return ticket

    def release(self, ticket: int) -> bool:
        """Give the ticket's place back; ``False`` if it was not held (a message is finished once)."""
        with self._cond:
            if ticket not in self._held:
                return False
            self._held.remove(ticket)
            self._cond.notify()
            return True

    def close(self) -> None:
        """Admit nothing more and wake a waiting network thread (stop: it must not wait on a loop that is leaving)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
