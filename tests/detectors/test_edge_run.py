"""How a run of ``sonopolis edge`` starts and stops, in its own process where it matters.

* SIGTERM at the end of a run, while the agent drains its queue: a file replay ends, the
  agent releases its periods and waits up to ``drain_timeout_s`` for the broker; a SIGTERM
  arriving then (systemd stopping the unit, ``docker stop``, a replay script's timeout)
  raised KeyboardInterrupt inside the drain: exit 130, no final line, the drain cut short,
  where ``sonopolis edge`` promises exit 0 with the count of what stays queued.
* Arguments that cannot give valid frames (a sample rate of 0, a start before 2000) are
  refused before anything is opened, not found by a traceback at the first frame.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _queued(queue: Path) -> int:
    try:
        with sqlite3.connect(queue / "outbox.sqlite3", timeout=0.1) as db:
            return db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_sigterm_during_the_final_drain_lets_it_finish_and_exits_cleanly(tmp_path: Path) -> None:
    audio = tmp_path / "two.wav"
    sf.write(audio, (0.05 * np.random.default_rng(3).standard_normal(2 * 48000)).astype(np.float32), 48000)
    queue = tmp_path / "queue"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "SONOPOLIS_EDGE_QUEUE_DIR": str(queue),
        "SONOPOLIS_EDGE_CLASSIFIER_ENABLED": "false",
        "SONOPOLIS_EDGE_SMART_MQTT__PORT": str(_unused_port()),  # the smart broker is down: the drain waits
        "SONOPOLIS_EDGE_DRAIN_TIMEOUT_S": "3",
    }
    command = [sys.executable, "-c", "from sonopolis.cli import app; app()", "edge", str(audio), "--fast",
               "--start", "2026-12-07T09:00:00Z"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _queued(queue) == 2 or proc.poll() is not None, timeout=60, what="both periods queued")
        time.sleep(0.5)  # the file is over: the agent is in its final drain
        assert proc.poll() is None, "the agent ended before the drain"
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (proc.returncode, err[-2000:])
    assert "edge: frames=2 " in out and "queued=2 " in out, out
    assert "not yet delivered" in err  # the drain ran to its timeout and said what stays queued
    assert took < 10, took
    assert _queued(queue) == 2  # kept for the next start


def test_edge_refuses_a_sample_rate_no_sensor_has_before_starting(tmp_path: Path) -> None:
    """``--rate 0`` (a slip for 48000) started the queue and the broker links, then died in the meter
    with a traceback; check-edge already bounds its --rate to the sensors' range."""
    from typer.testing import CliRunner

    from sonopolis import cli

    env = {"SONOPOLIS_EDGE_QUEUE_DIR": str(tmp_path / "queue"), "SONOPOLIS_EDGE_CLASSIFIER_ENABLED": "false",
           "SONOPOLIS_EDGE_SMART_MQTT__PORT": str(_unused_port())}
    for rate in ("0", "-48000", "480000"):
        result = CliRunner().invoke(cli.app, ["edge", "-", "--rate", rate], input=b"", env=env)
        assert result.exit_code == 2, (rate, result.exit_code, result.output[-500:])
        assert "--rate" in result.output
    assert not (tmp_path / "queue").exists()  # refused before anything was opened


def test_a_start_before_2000_is_refused_before_anything_is_measured(tmp_path: Path) -> None:
    """Frames before 2000 are refused by the wire model (a clock never set, 1970 after a power cut
    without RTC): the agent measured, then died at its first frame with a pydantic traceback, and as a
    service restarted into the same death. Said at once, as the run's error, with nothing opened."""
    from detectors.runner import RunError, run_edge
    from detectors.settings import EdgeSettings

    audio = tmp_path / "two.wav"
    sf.write(audio, np.zeros(2 * 48000, np.float32), 48000)
    settings = EdgeSettings(queue_dir=tmp_path / "queue", classifier_enabled=False)
    for start in ("1999-12-31T23:59:59Z", "1970-01-01T00:00:07+00:00"):
        try:
            run_edge(settings, str(audio), start=start)
        except RunError as exc:
            assert "2000" in str(exc) and "clock" in str(exc), exc
        else:
            raise AssertionError(f"--start {start} was accepted")
    assert not (tmp_path / "queue").exists()
