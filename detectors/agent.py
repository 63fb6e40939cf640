"""The edge agent: audio blocks in, level frames and security events out (as messages).

Flow for each block (held in memory only, released after the call):

* the level meter integrates it into 1 s periods (smart path);
* the block, resampled to the classifier's rate, goes to the sound-event classifier;
* each detection is *routed*: security classes become ``SecurityEvent`` messages
  for the safe channel, ``car_horn``/``siren`` only increment the anonymous count of
  the 1 s period they started in, anything else (``background``) is ignored.

A period is held back until the classifier has heard the audio that can still
report an onset inside it (its window plus hop), then leaves as a ``LevelFrame``
with its counts. Messages go to the outbox and the links publish them; without a
safe broker configured, security events are counted and never leave.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol

import numpy as np

from detectors.capture_clock import JUMP_S, CaptureClock
from detectors.finite import silence_non_finite
from detectors.meter import PeriodLevels, SoundLevelMeter
from detectors.outbox import Outbox
from detectors.publisher import BrokerLink
from detectors.resample import StreamingResampler
from messages.level_frame import NOISE_SOURCES, SourceCounts
from messages.security_event import SECURITY_CLASSES, SecurityEvent

log = logging.getLogger(__name__)

CLASSIFIER_LOOKAHEAD_S = 2.0
"""How long after a period ends a detection may still report an onset inside it."""
REPAIR_WARNING_EVERY_S = 60.0
DRAIN_TURN_S = 0.1
"""At the end, each broker link drains for this long in turn, so neither waits for the other."""


class DetectionLike(Protocol):
    label: str
    confidence: float
    onset: datetime


class ClassifierLike(Protocol):
    """What the agent needs of ``detectors.classifier.StreamingClassifier``."""

    sample_rate: int

    def feed(self, samples: np.ndarray, start: datetime) -> list[DetectionLike]: ...


Route = Literal["safe", "count", "ignore"]


def route(label: str) -> Route:
    """The separation rule in one place: where a detected class may go."""
    if label in SECURITY_CLASSES:
        return "safe"
    if label in NOISE_SOURCES:
        return "count"
    return "ignore"


class EdgeAgent:
    """One sensor's pipeline. Not thread-safe: one loop feeds it."""

    def __init__(
        self,
        *,
        sensor_id: str,
        calibration_offset_db: float,
        sample_rate: int,
        start: datetime,
        outbox: Outbox,
        smart: BrokerLink | None,
        safe: BrokerLink | None,
        classifier: ClassifierLike | None = None,
        model_id: str = "",
    ):
        self.sensor_id = sensor_id
        self.offset = calibration_offset_db
        self.sample_rate = int(sample_rate)
        self.start = start.astimezone(timezone.utc)
        self.outbox = outbox
        self.smart = smart
        self.safe = safe
        self.classifier = classifier
        self.model_id = model_id[:64]
        self.meter = SoundLevelMeter(self.sample_rate, calibration_offset_db, self.start)
        self.clock = CaptureClock()
        self._sent_until: datetime | None = None  # capture-clock end of the last period released
        self._dropping = False
        self.frames_dropped = 0  # periods overlapping ones already sent (system clock stepped back)
        self._resampler = StreamingResampler(self.sample_rate, classifier.sample_rate) if classifier else None
        self._cls_samples = 0
        self._n = 0
        self._held: deque[PeriodLevels] = deque()
        self._counts: dict[int, dict[str, int]] = {}
        self._last_lafmax = 0.0
        self.frames_queued = 0
        self.events_queued = 0
        self.events_withheld = 0  # security events with no safe broker configured
        self.late_counts = 0
        self.samples_repaired = 0  # non-finite samples from the source, measured and classified as silence
        self._repair_warned_at: float | None = None

    @property
    def stream_time(self) -> datetime:
        """Time of the next sample to arrive."""
        return self.start + timedelta(seconds=self._n / self.sample_rate)

    def _classifier_time(self) -> datetime:
        """Sample-count time of the next sample the classifier will be fed."""
        assert self.classifier is not None
        return self.start + timedelta(seconds=self._cls_samples / self.classifier.sample_rate)

    def feed(self, block: np.ndarray, captured_at: datetime | None = None, *, after_loss: bool = False,
             precise: bool = False) -> None:
        """One block of samples. Live sources add the UTC capture time of its first sample and
        whether audio was lost before it: what leaves the agent (security-event onsets, level
        frames' times) is carried over to that clock (:mod:`detectors.capture_clock`); inside,
        everything stays on the sample count.
        """
        block = np.asarray(block, dtype=np.float32)
        if captured_at is not None:
            self.clock.observe(self.stream_time, captured_at, after_loss=after_loss, precise=precise)
        self._n += block.size
        self._held.extend(self.meter.feed(block))  # the meter marks a period with non-finite samples degraded
        block, repaired_at = silence_non_finite(block)
        if repaired_at.size:
            self._note_repaired(repaired_at.size)
        if self._held:
            self._last_lafmax = self._held[-1].lafmax
        if self.classifier is not None and self._resampler is not None:
            chunk = self._resampler(block)
            if chunk.size:
                t = self._classifier_time()
                self._cls_samples += chunk.size
                for detection in self.classifier.feed(chunk, t):
                    self._on_detection(detection)
        self._release(final=False)
        self.pump()

    def _note_repaired(self, n: int) -> None:
        """Count non-finite samples; warn at the first and then at most once a minute of stream."""
        self.samples_repaired += n
        now = self._n / self.sample_rate
        if self._repair_warned_at is None or now - self._repair_warned_at >= REPAIR_WARNING_EVERY_S:
            self._repair_warned_at = now
            log.warning("the source delivered non-finite samples (NaN/Inf), measured as silence: %d so far; "
                        "their periods are sent as degraded", self.samples_repaired)

    def _period_index(self, t: datetime) -> int:
        return math.floor((t - self.start).total_seconds() / self.meter.period_s)

    def _on_detection(self, d: DetectionLike) -> None:
        where = route(d.label)
        if where == "count":
            index = self._period_index(d.onset)
            released = self.meter.periods_completed - len(self._held)  # periods already sent
            if index < released:
                self.late_counts += 1
                index = released
            per = self._counts.setdefault(index, {})
            per[d.label] = per.get(d.label, 0) + 1
        elif where == "safe":
            self._queue_event(d)

    def _queue_event(self, d: DetectionLike) -> None:
        if self.safe is None:
            self.events_withheld += 1
            log.info("security detection not sent: no safe broker configured (%d so far)", self.events_withheld)
            return
        level_dbfs = getattr(d, "level_dbfs", None)
        level = level_dbfs + self.offset if level_dbfs is not None else self._last_lafmax
        event = SecurityEvent.model_validate(
            {
                "sensor_id": self.sensor_id,
                "class": d.label,
                "confidence": round(float(d.confidence), 4),
                "onset": self.clock.to_capture(d.onset),  # UTC, for localisation across sensors
                "level_db": round(min(180.0, max(0.0, level)), 2),
                "model": self.model_id,
            }
        )
        self.outbox.put("safe", "event", event.topic(), event.to_json())
        self.events_queued += 1
        log.info("security event %s queued for the safe broker", event.event_id)

    def _release(self, final: bool) -> None:
        horizon = self._classifier_time() if self.classifier else None
        while self._held:
            p = self._held[0]
            end = p.start + timedelta(seconds=p.period_s)
            if not final and horizon is not None and horizon < end + timedelta(seconds=CLASSIFIER_LOOKAHEAD_S):
                break
            index = self._period_index(p.start)
            start = self.clock.to_capture(p.start)  # UTC, as a live card captured it
            overlaps = self._sent_until is not None and start < self._sent_until - timedelta(seconds=JUMP_S)
            if overlaps:
                # The system clock stepped back: a period overlapping those already sent is dropped, not sent twice.
                if not self._dropping:
                    log.warning("level periods from %s overlap periods already sent (system clock stepped back?): "
                                "dropped until the clock passes %s", start.isoformat(), self._sent_until.isoformat())
                self.frames_dropped += 1
            elif self.smart is not None:
                frame = replace(p, start=start).to_frame(self.sensor_id, SourceCounts(**self._counts.get(index, {})))
                self.outbox.put("smart", "frame", frame.topic(), frame.model_dump_json(by_alias=True))
                self.frames_queued += 1
            self._dropping = overlaps
            # Forgotten only once queued: a stop arriving in between sends the frame twice (stored once), never zero times.
            self._held.popleft()
            self._counts.pop(index, None)
            if not overlaps:
                self._sent_until = start + timedelta(seconds=p.period_s)

    def pump(self) -> None:
        for link in (self.smart, self.safe):
            if link is not None:
                link.pump()

    def finish(self, drain_timeout_s: float = 10.0) -> bool:
        """End of stream: release held periods and try to deliver the queue within ``drain_timeout_s``.

        Both links are drained at once, in turns of ``DRAIN_TURN_S``: one after the other, a smart
        broker that is down held the security events back for its whole timeout, and a stop took
        twice the timeout when both were down.
        """
        rest = self.meter.unfinished_s
        if rest > 0:  # said, not silent: a replay of a 2.8 s file gives 2 frames, and the operator should know why
            log.info("end of stream: its last %.3f s is less than a whole %g s period and gives no level frame",
                     rest, self.meter.period_s)
        self._release(final=True)
        deadline = time.monotonic() + drain_timeout_s
        waiting = [link for link in (self.smart, self.safe) if link is not None]
        while waiting:
            turn = min(DRAIN_TURN_S, deadline - time.monotonic())
            if turn <= 0:
                break
            waiting = [link for link in waiting if not link.drain(turn)]
        return not waiting
