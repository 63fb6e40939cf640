"""The demo's timeline: the live scene is anchored after the history is published.

Anchored before, a machine slow to publish an hour of history (two minutes under load)
handed the agents a scene whose gunshot was already older than the bridge's
``steer_max_age_s``: the bridge alerted it as late and no camera turned. The services are
left out here (``start_services``, the agents and the observation are replaced); what is
checked is only which times the demo gives to whom.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console

from sonopolis.demo import DemoReport
from sonopolis.demo_run import DemoRun

SLOW_PUBLISH_S = 2.2


def test_scene_is_anchored_after_a_slow_history_and_the_timeline_has_no_hole(tmp_path: Path, monkeypatch) -> None:
    run = DemoRun(tmp_path, Console(quiet=True), n_sensors=5, n_edge=2, seed=3)
    times: dict[str, list[datetime]] = {s.sensor_id: [] for s in run.world.sensors}
    seen: dict[str, object] = {}

    def publish(sensor_id: str, frames: list[dict]) -> None:
        times[sensor_id] += [datetime.fromisoformat(f["time"].replace("Z", "+00:00")) for f in frames]
        if "slow" not in seen:  # the first call publishes history: one slow call moves "now" on
            seen["slow"] = True
            time.sleep(SLOW_PUBLISH_S)

    def agents(start: datetime, seconds: int, progress, task) -> None:
        seen["scene_start"], seen["agents_started_at"] = start, datetime.now(timezone.utc)
        for sensor_id in run.world.edge_ids:
            times[sensor_id] += [start + timedelta(seconds=k) for k in range(seconds)]

    def observe(history_seconds: int, scene_seconds: int) -> DemoReport:
        seen["history_seconds"] = history_seconds
        return DemoReport()

    monkeypatch.setattr(run, "start_services", lambda progress=None: None)
    monkeypatch.setattr(run, "publish_frames", publish)
    monkeypatch.setattr(run, "_run_edge_agents", agents)
    monkeypatch.setattr(run, "_observe", observe)
    run.execute(history_minutes=1, scene_seconds=30)

    scene_start = seen["scene_start"]
    assert isinstance(scene_start, datetime)
    # The scene ends 5 s before the agents start, as a live street would; the slow history did not age it.
    lag = (seen["agents_started_at"] - (scene_start + timedelta(seconds=30))).total_seconds()
    assert 4.0 <= lag < 6.5, lag
    # Every sensor has one frame a second, without a hole or an overlap, from the history's start
    # to the end of the scene (+5 s for the sensors without an agent), and the demo expects as many.
    for s in run.world.sensors:
        ts = sorted(times[s.sensor_id])
        assert len(ts) == len(set(ts)), s.sensor_id
        steps = {(b - a).total_seconds() for a, b in zip(ts, ts[1:])}
        assert steps == {1.0}, (s.sensor_id, steps)
        end = scene_start + timedelta(seconds=30 if s.sensor_id in run.world.edge_ids else 35)
        assert ts[-1] + timedelta(seconds=1) == end
    n_edge = len(run.world.edge_ids)
    history_seconds = seen["history_seconds"]
    assert history_seconds >= 60 + 2  # the minute of history, and the seconds publishing it took
    expected = len(run.world.sensors) * history_seconds + (len(run.world.sensors) - n_edge) * 35 + n_edge * 30
    assert expected == sum(len(v) for v in times.values())
