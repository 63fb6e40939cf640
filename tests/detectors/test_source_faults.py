"""What the edge agent does when its audio goes bad: NaN samples, a damaged file, a card that dies.

Each once stopped the agent badly: a NaN poisoned the meter for good (0 dB, status ok,
for ever after) and then killed the classifier; a damaged FLAC ended the run with a
traceback and without sending what was measured; a dead card left the agent waiting
for ever, silently.
"""

from __future__ import annotations

import io
import sys
import types
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.config import MqttSettings
from detectors import sources
from detectors.agent import EdgeAgent
from detectors.classifier import StreamingClassifier
from detectors.meter import SoundLevelMeter
from detectors.outbox import Outbox
from detectors.runner import RunError, run_agent
from detectors.settings import EdgeSettings
from detectors.sources import FileSource, SourceError, SoundCardSource, StdinSource
from messages.level_frame import LevelFrame, SensorStatus
from sonopolis.embedded import LocalMosquitto
from tests.detectors.test_agent import Collector
from tests.detectors.test_capture_clock import _QueueOnly
from tests.polling import wait_until

T0 = datetime(2026, 12, 7, 9, 0, 0, tzinfo=timezone.utc)
FS = 48000


def _noise(seconds: float, seed: int = 1) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).standard_normal(int(seconds * FS))).astype(np.float32)


def test_the_meter_measures_non_finite_samples_as_silence_and_flags_only_their_period() -> None:
    audio = _noise(5.0)
    damaged = audio.copy()
    damaged[int(2.002 * FS)] = np.nan
    damaged[int(2.5 * FS)] = np.inf
    clean = audio.copy()
    clean[[int(2.002 * FS), int(2.5 * FS)]] = 0.0
    got = SoundLevelMeter(FS, 100.0, T0).feed(damaged)
    want = SoundLevelMeter(FS, 100.0, T0).feed(clean)
    assert [p.to_frame("s").status for p in got] == [SensorStatus.OK, SensorStatus.OK, SensorStatus.DEGRADED, SensorStatus.OK, SensorStatus.OK]
    assert got[2].repaired == 2
    for g, w in zip(got, want):
        assert (g.laeq, g.lafmax, g.lcpeak, g.bands) == (w.laeq, w.lafmax, w.lcpeak, w.bands)


def test_the_agent_keeps_measuring_and_classifying_through_nan_on_stdin(tmp_path: Path) -> None:
    """f32le on stdin with one NaN at 2.002 s: the shipped classifier (which refuses NaN) keeps running."""
    audio = _noise(6.0)
    audio[int(2.002 * FS)] = np.nan
    source = StdinSource(FS, "f32le", stream=io.BytesIO(audio.astype("<f4").tobytes()))
    agent = EdgeAgent(sensor_id="sensor-01", calibration_offset_db=100.0, sample_rate=FS, start=T0,
                      outbox=Outbox(tmp_path / "queue", 1000), smart=_QueueOnly(), safe=_QueueOnly(),  # type: ignore[arg-type]
                      classifier=StreamingClassifier())
    for block in source.blocks():
        agent.feed(block.samples)
    agent.finish(0)
    frames = [LevelFrame.model_validate_json(m.payload) for m in agent.outbox.pending("smart", 100)]
    assert [f.status for f in frames] == [SensorStatus.OK] * 2 + [SensorStatus.DEGRADED] + [SensorStatus.OK] * 3
    assert all(abs(f.laeq - frames[0].laeq) < 1.0 for f in frames)  # the meter is not poisoned after the NaN
    assert agent.samples_repaired == 1


def _flac(path: Path, seconds: float, seed: int) -> None:
    sf.write(path, _noise(seconds, seed), FS, format="FLAC")


def test_a_damaged_file_ends_the_run_with_an_error_after_sending_what_was_measured(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    folder = tmp_path / "replay"
    folder.mkdir()
    _flac(folder / "a.flac", 3.0, 1)
    _flac(folder / "b.flac", 6.0, 2)
    data = (folder / "b.flac").read_bytes()
    third = len(data) // 3
    (folder / "b.flac").write_bytes(data[:third] + np.random.default_rng(3).bytes(third) + data[2 * third :])
    settings = EdgeSettings(sensor_id="sensor-01", calibration_offset_db=100.0, classifier_enabled=False,
                            smart_mqtt=MqttSettings(port=mqtt_broker.port, client_id=f"edge-{uuid.uuid4().hex[:6]}"),
                            queue_dir=tmp_path / "queue", drain_timeout_s=10)
    rx = Collector(mqtt_broker.port)
    source = FileSource(folder)
    try:
        with pytest.raises(RunError, match=r"cannot decode .*b\.flac after \d+\.\d s"):
            run_agent(settings, source.blocks(), source.sample_rate, T0, None)
        # a.flac (3 s) and b.flac's first, undamaged part were measured and delivered before the error.
        wait_until(lambda: len(rx.frames()) >= 4, timeout=10, what="the frames measured before the damage")
        assert [f.time for f in rx.frames()][:4] == [T0.replace(second=s) for s in range(4)]
    finally:
        rx.close()


class _DeadStream:
    """PortAudio's stream of a card that went away: no callback any more."""

    def __init__(self, active: bool, **_: object) -> None:
        self.active = active
        self.time = 0.0

    def __enter__(self) -> _DeadStream:
        return self

    def __exit__(self, *_: object) -> None:
        return None


@pytest.mark.parametrize("active", [False, True], ids=["stream stopped", "stream open but silent"])
def test_a_sound_card_that_stops_delivering_audio_ends_the_source(monkeypatch: pytest.MonkeyPatch, active: bool) -> None:
    """So the service exits and systemd/docker restart it, instead of a live process measuring nothing.

    No card can be unplugged here: PortAudio's module is replaced by one whose stream never calls back.
    """
    fake = types.SimpleNamespace(InputStream=lambda **kw: _DeadStream(active, **kw), PortAudioError=RuntimeError)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    monkeypatch.setattr(sources, "CARD_SILENT_S", 2.0)
    card = SoundCardSource(FS, device="usb-mic")
    with pytest.raises(SourceError, match="sound card 'usb-mic' delivered no audio for .* unplugged or failed"):
        next(card.blocks())
