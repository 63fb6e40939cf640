"""Live input: onsets and frame times on the capture clock, the sample count inside the agent.

A sound card's crystal is off by up to ~100 ppm, and audio overwritten when the agent
falls behind shifts the sample count for good; TDOA localisation needs each sensor's
onsets on UTC to the millisecond. These tests drive the sound-card source's PortAudio
callback and the agent with a simulated card (no device needed; the real PortAudio
path is ``test_soundcard.py``).
"""

from __future__ import annotations

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
from messages.security_event import SecurityEvent
from tests.detectors.test_agent import FakeDetection

T0 = datetime(2026, 12, 7, 3, 0, 0, tzinfo=timezone.utc)
FS = 48_000
BLOCK = FS // 10
PPM = 100e-6  # the card's crystal runs fast: FS * (1 + PPM) samples per real second (agent tests also try slow)
LATENCY_S = 0.012  # a buffer's first sample reached the ADC this long before its callback ran
LOST_AT = 400  # 1 s of audio is lost before this block


def _index(k: int) -> int:
    """Card sample index of the first sample of the agent's block ``k``."""
    return k * BLOCK + (FS if k >= LOST_AT else 0)


def _true_time(index: int, ppm: float = PPM) -> datetime:
    return T0 + timedelta(seconds=index / (FS * (1 + ppm)))


def test_sound_card_blocks_carry_their_capture_time_and_say_when_audio_was_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    card = sources.SoundCardSource(FS, buffer_s=2.0)
    clocks = {"unix": 0.0}
    monkeypatch.setattr(sources.time, "time", lambda: clocks["unix"])
    card._stream = SimpleNamespace(time=0.0)  # PortAudio's stream clock, on its own origin

    def deliver(first: int, n_blocks: int, late_s: float = 0.003) -> None:
        for k in range(n_blocks):
            index = first + k * BLOCK
            arrived = (_true_time(index) - T0).total_seconds() + BLOCK / (FS * (1 + PPM)) + LATENCY_S
            clocks["unix"] = T0.timestamp() + arrived + late_s  # the callback ran late by late_s...
            card._stream.time = 500.0 + arrived + late_s  # ...and read both clocks together
            adc = 500.0 + (_true_time(index) - T0).total_seconds()
            card.on_audio(np.zeros((BLOCK, 1), np.float32), BLOCK, SimpleNamespace(inputBufferAdcTime=adc), None)

    deliver(0, 10)
    got = [b for _ in range(10) for b in card.drain(timeout_s=0)]
    assert len(got) == 10 and not any(b.after_loss for b in got)
    assert all(abs((b.captured_at - _true_time(k * BLOCK)).total_seconds()) < 1e-6 for k, b in enumerate(got))

    assert all(b.precise for b in got)
    deliver(10 * BLOCK, 30)  # 3 s while the agent is away: the 2 s ring keeps only the last 2 s
    assert card.ring.overruns == FS
    first_after, second_after = [b for _ in range(2) for b in card.drain(timeout_s=0)]
    assert first_after.after_loss and not second_after.after_loss
    assert abs((first_after.captured_at - _true_time(20 * BLOCK)).total_seconds()) < 1e-6

    # PortAudio flags an input overflow on a buffer: the block that starts with it says audio was lost.
    while list(card.drain(timeout_s=0)):
        pass
    card._stream = None  # and a host API without ADC times: stamps from the callback, not precise
    clocks["unix"] += 0.1
    card.on_audio(np.zeros((BLOCK, 1), np.float32), BLOCK, SimpleNamespace(inputBufferAdcTime=0.0), "input overflow")
    (flagged,) = list(card.drain(timeout_s=0))
    assert flagged.after_loss and not flagged.precise and card.card_overflows == 1


def test_lost_audio_is_reported_at_most_every_10_s_and_once_more_when_capture_stops(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A gap in the levels is never silent: the losses since the last report are logged when the agent stops."""
    card = sources.SoundCardSource(FS, buffer_s=0.5)
    clock = {"now": 1000.0}
    monkeypatch.setattr(sources.time, "monotonic", lambda: clock["now"])

    class Stream:  # PortAudio's stream, opened and closed by blocks(); the test plays its callback thread
        time = 0.0

        def __init__(self, **kwargs: object) -> None:
            self.opened_with = kwargs

        def __enter__(self) -> Stream:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(card._sd, "InputStream", Stream)

    def capture(seconds: float) -> None:
        for _ in range(round(seconds * FS / BLOCK)):
            card.on_audio(np.zeros((BLOCK, 1), np.float32), BLOCK, SimpleNamespace(inputBufferAdcTime=0.0), None)

    blocks = card.blocks()
    with caplog.at_level("WARNING", logger=sources.log.name):
        capture(1.0)  # the agent was away for 1 s: half of it overwritten in the 0.5 s ring
        assert next(blocks).after_loss  # the oldest block left follows the overwritten half; reported at once
        capture(1.0)
        clock["now"] += 2.0  # within LOSS_REPORT_S of the first report: held back
        next(blocks)
        reports = [r.getMessage() for r in caplog.records if "fell behind" in r.getMessage()]
        assert len(reports) == 1 and f"{FS // 2} samples (0.50 s)" in reports[0]
        blocks.close()  # the agent stops (Ctrl-C, SIGTERM): what was held back is reported now
    reports = [r.getMessage() for r in caplog.records if "fell behind" in r.getMessage()]
    assert len(reports) == 2 and card.ring.overruns > FS // 2
    assert f"{card.ring.overruns - FS // 2} samples" in reports[1]


class _ScriptedClassifier:
    """Records the start time of each chunk (one chunk per block); at chunk k it reports script[k] = (label, onset chunk)."""

    sample_rate = 16_000

    def __init__(self, script: dict[int, tuple[str, int]]) -> None:
        self.starts: list[datetime] = []
        self.script = script

    def feed(self, samples: np.ndarray, start: datetime) -> list[FakeDetection]:
        self.starts.append(start)
        if (k := len(self.starts) - 1) in self.script:
            label, onset_chunk = self.script[k]
            return [FakeDetection(label, 0.9, self.starts[onset_chunk])]
        return []


class _QueueOnly:
    """A link that only queues (messages stay in the outbox for the test to read)."""

    def pump(self) -> None:
        pass

    def drain(self, timeout_s: float) -> bool:
        return True


def _agent(tmp_path: Path, classifier: object) -> EdgeAgent:
    return EdgeAgent(sensor_id="sensor-01", calibration_offset_db=100.0, sample_rate=FS, start=T0,
                     outbox=Outbox(tmp_path / "queue", 1000), smart=_QueueOnly(), safe=_QueueOnly(),  # type: ignore[arg-type]
                     classifier=classifier)  # type: ignore[arg-type]


def _frames(agent: EdgeAgent) -> list[LevelFrame]:
    return [LevelFrame.model_validate_json(m.payload) for m in agent.outbox.pending("smart", 1000)]


@pytest.mark.parametrize("ppm", [100e-6, -100e-6], ids=["fast card", "slow card"])
def test_agent_sends_onsets_and_frames_on_the_capture_clock_and_keeps_the_sample_count_inside(tmp_path: Path, ppm: float) -> None:
    """Stamps taken when callbacks ran (no ADC times): late by ~1 ms, once by 80 ms; 1 s lost, reported."""
    # Gunshots reported a few blocks after their audio: mid-stream, across the loss (onset before it,
    # reported after), and after it; a horn to be counted in its sample-count period.
    classifier = _ScriptedClassifier({300: ("gunshot", 295), 410: ("gunshot", 395), 420: ("gunshot", 405),
                                      456: ("car_horn", 455)})
    agent = _agent(tmp_path, classifier)
    rng = np.random.default_rng(1)
    for k in range(600):
        late = 0.08 if k == 200 else min(0.01, rng.exponential(0.001))
        agent.feed(rng.normal(0, 0.01, BLOCK).astype(np.float32), _true_time(_index(k), ppm) + timedelta(seconds=late),
                   after_loss=k == LOST_AT)
    agent.finish(0.1)

    # The classifier only ever sees the sample count: contiguous chunks, no jump to restart its windows.
    steps = np.diff([(s - T0).total_seconds() for s in classifier.starts])
    assert len(classifier.starts) == 600 and 0.099 < steps.min() and steps.max() < 0.1007
    events = [SecurityEvent.model_validate_json(m.payload) for m in agent.outbox.pending("safe", 10)]
    assert len(events) == 3
    for event, chunk in zip(events, (295, 395, 405)):
        sample = round((classifier.starts[chunk] - T0).total_seconds() * FS) + (FS if chunk >= LOST_AT else 0)
        assert abs((event.onset - _true_time(sample, ppm)).total_seconds()) < 0.001, chunk
    assert agent.clock.jumps == 0  # the pause is jitter; the loss was reported by the source
    # Level frames: measured on the sample count, sent with their capture time (a gap where audio was lost).
    frames = _frames(agent)
    assert len(frames) == 60
    for i, frame in enumerate(frames[1:], start=1):  # the first one has a single callback's stamp: ~1 ms late
        truth = _true_time(i * FS + (FS if i * 10 >= LOST_AT else 0), ppm)
        assert abs((frame.time - truth).total_seconds()) < 0.001, i
    # The horn is counted in the period that held its audio (the 46th second the card captured).
    assert [i for i, f in enumerate(frames) if f.sources.car_horn] == [45]


def test_precise_stamps_show_an_unreported_dropout_at_once_and_a_clock_step_back_never_overlaps_frames(tmp_path: Path) -> None:
    """With the card's ADC times: 30 ms dropped by the card unflagged at block 150, then NTP steps the clock back 3 s."""
    classifier = _ScriptedClassifier({160: ("gunshot", 152)})
    agent = _agent(tmp_path, classifier)
    for k in range(400):
        index = k * BLOCK + (int(0.03 * FS) if k >= 150 else 0)
        step = -3.0 if k >= 250 else 0.0
        agent.feed(np.zeros(BLOCK, np.float32), _true_time(index, -100e-6) + timedelta(seconds=step), precise=True)
    agent.finish(0.1)
    (event,) = [SecurityEvent.model_validate_json(m.payload) for m in agent.outbox.pending("safe", 10)]
    sample = round((classifier.starts[152] - T0).total_seconds() * FS) + int(0.03 * FS)
    assert abs((event.onset - _true_time(sample, -100e-6)).total_seconds()) < 0.001  # the 30 ms are in, at once
    frames = _frames(agent)
    starts = [f.time for f in frames]
    assert all(b >= a + timedelta(seconds=0.95) for a, b in zip(starts, starts[1:]))  # never overlapping
    assert agent.frames_dropped == 3 and len(frames) == 40 - 3  # the 3 s already sent are not sent again
    assert agent.clock.jumps == 1  # the step is warned about; the 30 ms dropout, under JUMP_S, is just taken


def test_an_unreported_jump_needs_three_agreeing_blocks() -> None:
    clock = CaptureClock()
    t = [T0 + timedelta(seconds=k / 10) for k in range(20)]
    offsets = [0.010] * 5 + [0.090, 0.300, 0.700] + [0.010] * 3 + [2.010] * 9  # pause jitter, then a clock step
    for k, offset in enumerate(offsets):
        clock.observe(t[k], t[k] + timedelta(seconds=offset))
        if k == 10:
            assert clock.jumps == 0 and clock.offset_s == pytest.approx(0.010)
    assert clock.jumps == 1 and clock.offset_s == pytest.approx(2.010)
    assert clock.to_capture(t[2]) == t[2] + timedelta(seconds=0.010)  # the past keeps its offset
    assert clock.to_capture(t[11]) == t[11] + timedelta(seconds=2.010)  # from the first block that showed the step
    assert CaptureClock().to_capture(T0) == T0  # no observation: no offset
