"""Live input: security-event times follow the capture clock, levels the sample count.

A sound card's crystal is off by up to ~100 ppm and audio overwritten when the agent
falls behind shifts the sample count for good; TDOA localisation needs each sensor's
onsets on UTC to the millisecond. These tests drive the sound-card source's PortAudio
callback and the agent directly with a simulated card (no device needed; the real
PortAudio path is ``test_soundcard.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from detectors import sources
from detectors.agent import EdgeAgent
from detectors.capture_clock import CaptureClock
from detectors.outbox import Outbox
from messages.level_frame import LevelFrame

T0 = datetime(2026, 12, 7, 3, 0, 0, tzinfo=timezone.utc)
FS = 48_000
BLOCK = FS // 10
PPM = 100e-6  # the card's crystal runs fast: FS * (1 + PPM) samples per real second
LATENCY_S = 0.012  # PortAudio's ADC time of a buffer's first sample, this much before the callback


def _callback_time(sample_index: int) -> float:
    """System time (UNIX s) of the callback delivering the buffer that starts at ``sample_index``."""
    return T0.timestamp() + sample_index / (FS * (1 + PPM)) + BLOCK / (FS * (1 + PPM)) + LATENCY_S


def _true_time(sample_index: int) -> datetime:
    return T0 + timedelta(seconds=sample_index / (FS * (1 + PPM)))


def test_sound_card_blocks_carry_their_capture_time_through_drift_and_lost_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    card = sources.SoundCardSource(FS, buffer_s=2.0)
    now = {"t": 0.0}
    monkeypatch.setattr(sources.time, "time", lambda: now["t"])

    def deliver(first: int, n_blocks: int) -> None:
        for k in range(n_blocks):
            index = first + k * BLOCK
            now["t"] = _callback_time(index)
            # PortAudio's stream clock: the buffer's first sample reached the ADC this long before the callback.
            info = SimpleNamespace(currentTime=100.0 + LATENCY_S + BLOCK / (FS * (1 + PPM)), inputBufferAdcTime=100.0)
            card.on_audio(np.zeros((BLOCK, 1), np.float32), BLOCK, info, None)

    deliver(0, 10)  # 1 s, read as it comes
    got = [t for _ in range(10) for _, t in card.drain(timeout_s=0)]
    expected = [_true_time(k * BLOCK) for k in range(10)]
    assert all(abs((g - e).total_seconds()) < 1e-6 for g, e in zip(got, expected))

    deliver(10 * BLOCK, 30)  # 3 s while the agent is away: the 2 s ring keeps only the last 2 s
    assert card.ring.overruns == FS
    (_, after_loss), = card.drain(timeout_s=0)
    assert abs((after_loss - _true_time(20 * BLOCK)).total_seconds()) < 1e-4  # the lost second is not counted away


@dataclass(frozen=True)
class _Detection:
    label: str
    confidence: float
    onset: datetime


class _RecordingClassifier:
    """Records the start time the agent gives each chunk (one chunk per block here); hears a horn in chunk 455."""

    sample_rate = 16_000

    def __init__(self) -> None:
        self.starts: list[datetime] = []

    def feed(self, samples: np.ndarray, start: datetime) -> list[_Detection]:
        self.starts.append(start)
        return [_Detection("car_horn", 0.9, start)] if len(self.starts) == 456 else []


class _QueueOnly:
    """A smart link that only queues (frames stay in the outbox for the test to read)."""

    def pump(self) -> None:
        pass

    def drain(self, timeout_s: float) -> bool:
        return True


def test_agent_puts_onsets_on_the_capture_clock_and_keeps_levels_on_the_sample_count(tmp_path: Path) -> None:
    classifier = _RecordingClassifier()
    agent = EdgeAgent(sensor_id="sensor-01", calibration_offset_db=100.0, sample_rate=FS, start=T0,
                      outbox=Outbox(tmp_path / "queue", 1000), smart=_QueueOnly(), safe=None,  # type: ignore[arg-type]
                      classifier=classifier)
    rng = np.random.default_rng(1)
    for k in range(600):  # 60 s of a card 100 ppm fast; callbacks run late by ~1 ms, once by 80 ms (a pause)
        index = k * BLOCK + (FS if k >= 400 else 0)  # 1 s of audio lost before block 400
        late = 0.08 if k == 200 else min(0.01, rng.exponential(0.001))
        agent.feed(rng.normal(0, 0.01, BLOCK).astype(np.float32), _true_time(index) + timedelta(seconds=late))
    agent.finish(0.1)

    # Event times: within 1 ms of the true capture time, the pause included; after the loss, from the
    # third block on (the jump is confirmed by three blocks, so the two before it keep the old offset).
    settled = [k for k in range(10, 600) if not 400 <= k < 403]
    for k in settled:
        index = k * BLOCK + (FS if k >= 400 else 0)
        assert abs((classifier.starts[k] - _true_time(index)).total_seconds()) < 0.001, k
    assert agent.clock.jumps == 1
    # Levels: on the sample count, as the meter measured them.
    assert agent.meter.periods_completed == 60
    assert agent.stream_time == T0 + timedelta(seconds=60)
    frames = [LevelFrame.model_validate_json(m.payload) for m in agent.outbox.pending("smart", 100)]
    assert [f.time for f in frames] == [T0 + timedelta(seconds=i) for i in range(60)]
    # The horn is counted in the period its onset has on the sample count (45), not on the capture clock (46).
    assert [f.time for f in frames if f.sources.car_horn] == [T0 + timedelta(seconds=45)]
    assert CaptureClock().to_capture(T0) == T0  # no observation: no offset
