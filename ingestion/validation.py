"""Turn one MQTT message into level rows, or into a reasoned rejection.

Every message ends either as rows or as a :class:`Rejected` with a stable
``reason_code`` (counted in metrics, stored in ``smart.quarantine``) and a human
reason naming the field at fault. Reason codes:

``wrong_topic``      topic is not ``sonopolis/v1/levels/<sensor_id>``, or the payload
                     belongs to another sensor than its topic says
``malformed_json``   not JSON (or not UTF-8)
``out_of_range``     a level outside 0-150 dB (peak 0-180), not finite, or lafmin > lafmax
``bad_bands``        unknown, missing or non-contiguous third-octave bands
``schema_error``     any other violation of the level-frame/batch schema
``unknown_sensor``   sensor not in the registry (or retired)
``future_timestamp`` frame time further in the future than the tolerance
``older_than_retention`` frame older than the raw retention (plain path): storing it
                     would recreate a dropped day and overwrite that day's complete
                     aggregates with the statistics of the few late frames

A batch is accepted or rejected as a whole, so a half-valid replay never produces
a hole that looks like a sensor outage.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from pydantic import ValidationError

from ingestion.writer import LevelRow, row_of
from messages.level_frame import LevelBatch, LevelFrame, sensor_from_topic

REASON_CODES: tuple[str, ...] = (
    "wrong_topic", "malformed_json", "out_of_range", "bad_bands", "schema_error", "unknown_sensor", "future_timestamp",
    "older_than_retention",
)
_RANGE_ERRORS = {"greater_than_equal", "less_than_equal", "greater_than", "less_than", "finite_number"}
_LEVEL_FIELDS = {"laeq", "lafmax", "lafmin", "lcpeak"}
_BATCH_MARKER = b'"frames"'


class Rejected(NamedTuple):
    reason_code: str
    reason: str
    sensor_id: str | None


def parse(
    topic: str,
    payload: bytes,
    *,
    is_known: Callable[[str], bool] | None,
    now: datetime,
    future_tolerance: timedelta,
    max_age: timedelta | None = None,
) -> list[LevelRow] | Rejected:
    """Validate one message; ``is_known(sensor_id)`` consults the registry cache.

    ``is_known=None`` skips the registry check: the service does it at commit time,
    against a registry it can re-read, so a database outage never turns valid
    frames into "unknown sensor" rejections.
    """
    topic_sensor = sensor_from_topic(topic)
    if topic_sensor is None:
        return Rejected("wrong_topic", f"topic {topic[:200]!r} is not sonopolis/v1/levels/<sensor_id>", None)
    try:
        if _BATCH_MARKER in payload:
            frames = list(LevelBatch.model_validate_json(payload).frames)
        else:
            frames = [LevelFrame.model_validate_json(payload)]
    except ValidationError as exc:
        code, reason = classify(exc)
        return Rejected(code, reason, topic_sensor)
    except Exception as exc:  # noqa: BLE001 - the trust boundary: whatever a payload provokes, it is quarantined
        # A validator that raises something pydantic does not wrap (it once was an
        # OverflowError) must not escape: it would stop the pipeline on every redelivery.
        return Rejected("schema_error", f"unreadable message ({type(exc).__name__}: {str(exc)[:300]})", topic_sensor)
    payload_sensor = frames[0].sensor_id
    if payload_sensor != topic_sensor:
        return Rejected("wrong_topic", f"payload of sensor {payload_sensor!r} published on the topic of {topic_sensor!r}", topic_sensor)
    if is_known is not None and not is_known(topic_sensor):
        return Rejected("unknown_sensor", f"sensor {topic_sensor!r} is not in the registry or is inactive", topic_sensor)
    for frame in frames:
        if frame.time - now > future_tolerance:
            return Rejected(
                "future_timestamp",
                f"frame time {frame.time.isoformat()} is {(frame.time - now).total_seconds():.0f} s ahead of the server clock "
                f"(tolerance {future_tolerance.total_seconds():.0f} s)",
                topic_sensor,
            )
        if max_age is not None and now - frame.time > max_age:
            return Rejected(
                "older_than_retention",
                f"frame time {frame.time.isoformat()} is older than the raw retention ({max_age.days} days): "
                "its day's raw rows are dropped and its aggregates final",
                topic_sensor,
            )
    return [row_of(f) for f in frames]


def classify(exc: ValidationError) -> tuple[str, str]:
    """(reason_code, reason) of a pydantic error: the most specific cause wins."""
    errors = exc.errors(include_url=False, include_input=False)
    found = {_code_of(err) for err in errors}
    code = next(c for c in ("malformed_json", "bad_bands", "out_of_range", "schema_error") if c in found or c == "schema_error")
    shown = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}" for e in errors[:3])
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return code, f"{len(errors)} validation error(s): {shown}{more}"


def _code_of(err: dict) -> str:  # type: ignore[type-arg]
    loc = {str(p) for p in err["loc"]}
    if err["type"] in ("json_invalid", "json_type"):
        return "malformed_json"
    if err["type"] in _RANGE_ERRORS and (loc & _LEVEL_FIELDS or "bands" in loc):
        return "out_of_range"
    if "bands" in loc:
        return "bad_bands"
    if "lafmin" in str(err.get("msg", "")) and "exceeds" in str(err.get("msg", "")):
        return "out_of_range"
    return "schema_error"
