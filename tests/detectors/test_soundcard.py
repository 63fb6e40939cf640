"""The live sound-card source, through the real PortAudio and ALSA: ``sonopolis edge soundcard``.

There is no sound card on a test machine, so ALSA itself stands in for one: its ``file``
PCM plugin, behind a ``plug`` converter, captures from a raw file of 16-bit samples
(a calibrated 1 kHz tone). PortAudio lists that PCM like any card, so the agent's own
code path runs unchanged: ``sounddevice.InputStream``, the callback into the ring
buffer, the agent loop, level frames on the real smart broker, and SIGTERM (as systemd
or ``docker stop`` send it) for a clean stop.

ALSA's null device does not pace capture, so the tone arrives faster than real time
and the ring buffer overwrites what the agent has not read: the test also sees those
losses reported. The test command installs PortAudio (``scripts/ensure_test_packages.sh``)
and the ``soundcard`` extra; without them this test fails, it is not skipped.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from sonopolis.embedded import LocalMosquitto
from tests.detectors.test_agent import Collector

REPO = Path(__file__).resolve().parents[2]
RATE = 48_000
AMPLITUDE = 0.25
OFFSET_DB = 100.0

ASOUNDRC = """
pcm.sonopolis_file {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{raw}"
    format "raw"
}}
pcm.sonopolis_card {{
    type plug
    slave {{
        pcm "sonopolis_file"
        format S16_LE
        rate {rate}
        channels 1
    }}
}}
"""


def _card(home: Path, tmp: Path) -> None:
    """An ALSA PCM ``sonopolis_card`` in ``home/.asoundrc`` capturing a 1 kHz tone at AMPLITUDE."""
    t = np.arange(3 * RATE) / RATE
    raw = tmp / "tone.s16"
    (np.round(AMPLITUDE * np.sin(2 * np.pi * 1000.0 * t) * 32767)).astype("<i2").tofile(raw)
    (home / ".asoundrc").write_text(ASOUNDRC.format(raw=raw, rate=RATE))


def test_portaudio_is_installed_for_the_live_source() -> None:
    """The test command provides PortAudio and sounddevice; their absence is a setup error, said as such."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise AssertionError(f"live-source tests need sounddevice and libportaudio2 (run ./scripts/test.sh): {exc}") from exc
    assert sounddevice.get_portaudio_version()[0] >= 1900


def test_edge_agent_measures_a_live_card_and_stops_cleanly_on_sigterm(tmp_path: Path, mqtt_broker: LocalMosquitto) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _card(home, tmp_path)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "SONOPOLIS_EDGE_SENSOR_ID": "sensor-card",
        "SONOPOLIS_EDGE_CALIBRATION_OFFSET_DB": str(OFFSET_DB),
        "SONOPOLIS_EDGE_QUEUE_DIR": str(tmp_path / "queue"),
        "SONOPOLIS_EDGE_CLASSIFIER_ENABLED": "false",
        "SONOPOLIS_EDGE_SMART_MQTT__PORT": str(mqtt_broker.port),
        "SONOPOLIS_EDGE_SMART_MQTT__CLIENT_ID": f"edge-{uuid.uuid4().hex[:6]}",
    }
    smart_rx = Collector(mqtt_broker.port)
    command = [sys.executable, "-c", "from sonopolis.cli import app; app()",
               "edge", "soundcard", "--device", "sonopolis_card", "--rate", str(RATE)]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        smart_rx.wait(lambda: len(smart_rx.frames()) >= 4 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, f"the agent ended on its own: {proc.communicate()[1][-3000:]}"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # a second one (an impatient operator) must not cut the drain short
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        smart_rx.close()

    assert proc.returncode == 0, err[-3000:]
    assert "stopped by the operator" in err
    assert "edge: frames=" in out and "queued=0 dropped=0" in out, out
    frames = smart_rx.frames()
    assert len(frames) >= 4
    assert all(f.sensor_id == "sensor-card" for f in frames)
    # A-weighting is 0 dB at 1 kHz: every period reads the calibrated tone, whatever the ring dropped.
    analytic = 20 * math.log10(AMPLITUDE / math.sqrt(2)) + OFFSET_DB
    laeq = [f.laeq for f in frames]
    assert all(abs(v - analytic) < 0.3 for v in laeq), (analytic, laeq)
    assert frames[-1].bands["1000"] > frames[-1].bands["500"] + 30
    assert "live input fell behind" in err  # the unpaced card outruns the agent, and it is said


STAMPS = """
import time
from detectors.sources import SoundCardSource
blocks = SoundCardSource({rate}, device="sonopolis_card").blocks()
for _ in range(5):
    block = next(blocks)
    print(block.samples.size, block.captured_at.timestamp(), time.time(), block.precise)
blocks.close()
"""


def test_live_blocks_are_stamped_with_their_capture_time(tmp_path: Path) -> None:
    """Through real PortAudio: every block carries a UTC capture time taken during the capture."""
    home = tmp_path / "home"
    home.mkdir()
    _card(home, tmp_path)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONPATH": str(REPO)}
    before = datetime.now(timezone.utc)
    proc = subprocess.run([sys.executable, "-c", STAMPS.format(rate=RATE)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    after = datetime.now(timezone.utc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert len(rows) == 5
    assert all(int(n) == RATE // 10 for n, *_ in rows)
    assert all(precise == "True" for *_, precise in rows)  # ALSA gives PortAudio its capture times
    for _, stamp, read_at, _ in rows:
        captured = datetime.fromtimestamp(float(stamp), timezone.utc)
        assert before - timedelta(seconds=1) <= captured <= after, (before, captured, after)
        # A block is read only once all of it was captured: its first sample is at least one block older.
        assert float(stamp) + 0.1 <= float(read_at) + 1e-3, (stamp, read_at)


BY_INDEX = """
import sounddevice
from detectors.sources import SoundCardSource, SourceError
index = [d["name"] for d in sounddevice.query_devices()].index("sonopolis_card")
blocks = SoundCardSource({rate}, device=str(index)).blocks()  # as --device gives it: a string
block = next(blocks)
print("index", block.samples.size, float(abs(block.samples).max()))
blocks.close()
try:
    next(SoundCardSource({rate}, device="no_such_card").blocks())
except SourceError as exc:
    print("refused", exc)
"""


def test_a_card_is_found_by_its_index_and_an_unknown_one_is_a_source_error(tmp_path: Path) -> None:
    """``--device`` says "name or index", but arrives as a string: "1" was searched as a name
    ("No input device matching '1'"), and an unknown name escaped as sounddevice's ValueError
    (a traceback) instead of the source error that names the device."""
    home = tmp_path / "home"
    home.mkdir()
    _card(home, tmp_path)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", BY_INDEX.format(rate=RATE)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    _, size, peak = lines[0].split()
    assert int(size) == RATE // 10 and abs(float(peak) - AMPLITUDE) < 0.01  # the tone of sonopolis_card
    assert lines[1].startswith("refused cannot open sound card 'no_such_card'"), lines
