"""What the broker's answer to a QoS 1 publish means for the queued message (MQTT v5 PUBACK).

Below 0x80 the broker took the message; 0x10 No matching subscribers is one of these
(nobody listens right now, and the broker still has the message). From 0x80 up it did
not, and the row must not be deleted as delivered:

* **permanent**: the same message gets the same answer until someone changes the broker
  or the sensor's settings. 0x87 Not authorized is what mosquitto 2.0 sends when its ACL
  denies the topic, e.g. a broker account that does not match the sensor id (the
  connection stays up, so nothing else shows it). The others are 0x90 Topic Name invalid
  and 0x99 Payload format invalid. The message is set aside straight away.
* **anything else** (0x97 Quota exceeded, 0x83 Implementation specific error, 0x80
  Unspecified error, 0x91 Packet Identifier in use...) may pass later. The channel backs
  off and sends the message again, at most ``RETRY_ROUNDS`` times, then sets it aside as
  well, so the queue never wedges behind a message the broker keeps refusing.
"""

from __future__ import annotations

from typing import Any, Literal

Verdict = Literal["delivered", "retry", "set_aside"]

NOT_AUTHORIZED = 0x87
PERMANENT = frozenset({NOT_AUTHORIZED, 0x90, 0x99})
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
RETRY_ROUNDS = 8
"""Transient refusals of one message, the last of which sets it aside: after pauses of
1+2+4+...+32+60 s, about 2 minutes of a broker refusing it."""


def code(reason: Any) -> int:
    """The numeric reason code of paho's ``ReasonCode`` (or of a plain int)."""
    return int(getattr(reason, "value", reason))


def verdict(reason: Any, tries: int) -> Verdict:
    """What to do with a message answered with ``reason``, refused ``tries`` times before."""
    value = code(reason)
    if value < 0x80:
        return "delivered"
    if value in PERMANENT or tries + 1 >= RETRY_ROUNDS:
        return "set_aside"
    return "retry"


def retry_delay(tries: int) -> float:
    """The pause after a message's ``tries``-th transient refusal (1, 2, 4... up to 60 s)."""
    return min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** max(0, tries - 1))


def describe(reason: Any) -> str:
    """'Not authorized (0x87)': the name paho gives the code, and the code itself to look it up."""
    value = code(reason)
    name = str(reason) if hasattr(reason, "value") else "reason"
    return f"{name} (0x{value:02X})"
