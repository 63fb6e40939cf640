"""The bridge steering real ONVIF clients (onvif-zeep-async) at the camera simulator.

Event in -> the right preset on the right camera -> alert on the feed with the camera
outcome; a dead camera and a wrong password still deliver the alert, which then says
"camera unavailable".
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from safecity_bridge.cameras import CameraConfig, PresetConfig, PtzController, PtzSettings
from safecity_bridge.correlation import IncidentState
from safecity_bridge.runner import BridgeThread
from safecity_bridge.steering import OnvifSteerer
from simulators.onvif_camera import OnvifCameraSimulator, SimulatedCamera
from simulators.onvif_ptz import Preset
from tests.safecity_bridge.bridge_harness import SENSORS, FeedReader, Publisher, event, make_settings
from tests.safecity_bridge.conftest import OPERATOR

USER, PASSWORD = "vms-bridge", "cam-secret-123"


def sim_camera() -> SimulatedCamera:
    presets = [Preset(token=f"p-{s.sensor_id}", name=s.sensor_id, pan=round(-0.6 + 0.4 * i, 2), tilt=-0.3) for i, s in enumerate(SENSORS)]
    return SimulatedCamera(name="cam-square", users={USER: PASSWORD}, presets=presets)


def camera_config(port: int, password: str = PASSWORD) -> CameraConfig:
    return CameraConfig(
        id="cam-square", host="127.0.0.1", port=port, username=USER, password=password,
        latitude=45.4398, longitude=4.3866, range_m=600,
        presets=[PresetConfig(token=f"p-{s.sensor_id}", latitude=s.latitude, longitude=s.longitude, sensor_id=s.sensor_id) for s in SENSORS],
    )


def run(db, broker, operators, cam: CameraConfig):
    settings = make_settings(db.safe, broker.port, operators=operators, cameras=[cam],
                             ptz=PtzSettings(command_timeout_s=0.5, total_budget_s=1.0, retries=0, connect_timeout_s=2.0))
    return BridgeThread(settings, lambda: OnvifSteerer(settings, environ={}))


def test_event_moves_the_camera_to_the_preset_of_the_sensor_then_alerts(db, mqtt_broker, operators):
    with OnvifCameraSimulator(sim_camera()) as sim, run(db, mqtt_broker, operators, camera_config(sim.port)) as bt:
        feed = FeedReader(f"http://127.0.0.1:{bt.settings.http_port}/feed", OPERATOR).start()
        pub = Publisher(mqtt_broker.port)
        try:
            pub.publish(event("s-south", "gunshot"))
            cmd = sim.wait_for_command(timeout=5)
            assert (cmd.operation, cmd.preset_token, cmd.user) == ("GotoPreset", "p-s-south", USER)
            inc = feed.wait_for(lambda m: m["type"] == "incident")["incident"]
            cams = feed.wait_for(lambda m: m["type"] == "cameras")
            assert cams["incident_id"] == inc["incident_id"]
            assert [(c["camera_id"], c["outcome"], c["preset"]) for c in cams["cameras"]] == [("cam-square", "moved_preset", "p-s-south")]
            bt.call(bt.service.settle())
            with psycopg.connect(db.safe) as conn:
                moves = conn.execute("SELECT camera_id, outcome, preset FROM safe.camera_moves WHERE incident_id = %s", (uuid.UUID(inc["incident_id"]),)).fetchall()
                journaled = conn.execute("SELECT details->>'preset' FROM safe.journal WHERE action = 'camera_moved'").fetchall()
            assert moves == [("cam-square", "moved_preset", "p-s-south")] and journaled == [("p-s-south",)]
        finally:
            feed.stop()
            pub.close()


@pytest.mark.parametrize("fault", ["dead", "wrong_password"])
def test_camera_failure_never_blocks_the_alert(db, mqtt_broker, operators, fault):
    with OnvifCameraSimulator(sim_camera()) as sim:
        cam = camera_config(sim.port, password="not-the-password" if fault == "wrong_password" else PASSWORD)
        if fault == "dead":
            sim.set_dead("refuse")
        with run(db, mqtt_broker, operators, cam) as bt:
            feed = FeedReader(f"http://127.0.0.1:{bt.settings.http_port}/feed", OPERATOR).start()
            pub = Publisher(mqtt_broker.port)
            try:
                pub.publish(event("s-north", "explosion"))
                inc = feed.wait_for(lambda m: m["type"] == "incident", timeout=5)["incident"]
                cams = feed.wait_for(lambda m: m["type"] == "cameras", timeout=10)
                assert cams["incident_id"] == inc["incident_id"]
                [c] = cams["cameras"]
                assert c["outcome"] == "unavailable" and c["message"] == "camera unavailable" and c["reason"]
                assert sim.commands == []
                if fault == "wrong_password":
                    assert sim.auth_failures > 0
                assert bt.service.camera_status["cam-square"]["status"] == "unavailable"
                bt.call(bt.service.settle())
                with psycopg.connect(db.safe) as conn:
                    rows = conn.execute("SELECT action FROM safe.journal WHERE incident_id = %s ORDER BY id", (uuid.UUID(inc["incident_id"]),)).fetchall()
                assert ("camera_unavailable",) in rows and ("incident_opened",) in rows
            finally:
                feed.stop()
                pub.close()


def test_a_queued_move_replaced_by_a_newer_one_is_journaled_as_replaced_not_as_an_unavailable_camera(db, mqtt_broker, operators):
    """Three incidents at once on one slow head: the first move is sent, the second waits
    behind it and is replaced by the third before it goes out. The journal is the legal
    record of what the bridge did: the second move was once journaled
    ``camera_unavailable`` and the console showed a working camera as unavailable."""
    cam = sim_camera()
    cam.command_delay_s = 0.5
    with OnvifCameraSimulator(cam) as sim:
        settings = make_settings(db.safe, mqtt_broker.port, operators=operators, cameras=[camera_config(sim.port)],
                                 ptz=PtzSettings(command_timeout_s=2.0, total_budget_s=3.0, retries=0, connect_timeout_s=2.0))
        with BridgeThread(settings, lambda: OnvifSteerer(settings, environ={})) as bt:
            feed = FeedReader(f"http://127.0.0.1:{bt.settings.http_port}/feed", OPERATOR).start()
            pub = Publisher(mqtt_broker.port)
            try:
                for sensor, cls in (("s-north", "gunshot"), ("s-south", "explosion"), ("s-east", "glass_break")):
                    pub.publish(event(sensor, cls))
                cams: list[dict] = []
                while len(cams) < 3:
                    m = feed.wait_for(lambda m: m["type"] == "cameras" and m["incident_id"] not in {c["incident_id"] for c in cams}, timeout=10)
                    cams.append(m)
                kinds = sorted(c["cameras"][0]["outcome"] for c in cams)
                assert kinds == ["moved_preset", "moved_preset", "replaced"], [c["cameras"] for c in cams]
                [replaced] = [c for c in cams if c["cameras"][0]["outcome"] == "replaced"]
                assert replaced["cameras"][0]["message"] != "camera unavailable"
                assert bt.service.camera_status["cam-square"]["status"] == "ok", bt.service.camera_status
                bt.call(bt.service.settle())
                with psycopg.connect(db.safe) as conn:
                    actions = conn.execute("SELECT action, details->>'outcome' FROM safe.journal WHERE incident_id = %s AND action LIKE 'camera%%'",
                                           (uuid.UUID(replaced["incident_id"]),)).fetchall()
                    unavailable = conn.execute("SELECT count(*) FROM safe.journal WHERE action = 'camera_unavailable'").fetchone()
                assert actions == [("camera_move_replaced", "replaced")] and unavailable == (0,)
                assert [c.preset_token for c in sim.commands] == ["p-s-north", "p-s-east"]
            finally:
                feed.stop()
                pub.close()


class ImpatientAfterFirst:
    """The service's steerer over a real PtzController whose moves after the first get a
    0.2 s budget: the second incident's move then runs out of time waiting behind the
    first on a slow head, deterministically (equal budgets only race for it)."""

    def __init__(self, cameras: list[CameraConfig], settings: PtzSettings):
        self.ptz = PtzController(cameras, settings, environ={})
        self._short = settings.model_copy(update={"total_budget_s": 0.2})
        self.calls = 0

    async def start(self) -> dict[str, str | None]:
        return await self.ptz.start()

    async def steer(self, incident: IncidentState) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls > 1:
            self.ptz.settings = self._short
        return [o.to_record() for o in await self.ptz.steer(incident.estimate)]

    def camera_ids(self) -> list[str]:
        return self.ptz.camera_ids()

    def camera_states(self) -> list[dict[str, Any]]:
        return self.ptz.camera_states()

    async def aclose(self) -> None:
        await self.ptz.close()


def test_a_move_that_ran_out_of_time_waiting_for_a_busy_head_is_journaled_as_busy_not_as_an_unavailable_camera(db, mqtt_broker, operators):
    """Two incidents on one slow head: the second move waits behind the first and its
    budget runs out before the head is free. It never reached the camera, yet it was
    journaled ``camera_unavailable`` and the console showed a working camera as
    unavailable; it is journaled ``camera_move_busy`` and the camera's status is left
    to the moves that did reach it."""
    cam = sim_camera()
    cam.command_delay_s = 1.5
    with OnvifCameraSimulator(cam) as sim:
        ptz = PtzSettings(command_timeout_s=2.5, total_budget_s=3.0, retries=0, connect_timeout_s=2.0, breaker_failures=1)
        cameras = [camera_config(sim.port)]
        settings = make_settings(db.safe, mqtt_broker.port, operators=operators, cameras=cameras, ptz=ptz)
        steerer = ImpatientAfterFirst(cameras, ptz)
        with BridgeThread(settings, lambda: steerer) as bt:
            feed = FeedReader(f"http://127.0.0.1:{bt.settings.http_port}/feed", OPERATOR).start()
            pub = Publisher(mqtt_broker.port)
            try:
                pub.publish(event("s-north", "gunshot"))
                first = feed.wait_for(lambda m: m["type"] == "incident", timeout=5)["incident"]
                pub.publish(event("s-south", "explosion"))  # the head is busy with the first move for 1.5 s
                second = feed.wait_for(lambda m: m["type"] == "incident" and m["incident"]["incident_id"] != first["incident_id"], timeout=5)["incident"]
                [busy] = feed.wait_for(lambda m: m["type"] == "cameras" and m["incident_id"] == second["incident_id"], timeout=10)["cameras"]
                assert busy["outcome"] == "busy" and "busy with earlier commands" in busy["reason"], busy
                assert busy["message"] != "camera unavailable"
                [moved] = feed.wait_for(lambda m: m["type"] == "cameras" and m["incident_id"] == first["incident_id"], timeout=10)["cameras"]
                assert moved["outcome"] == "moved_preset", moved
                assert bt.service.camera_status["cam-square"]["status"] == "ok", bt.service.camera_status
                [state] = steerer.camera_states()
                assert (state["breaker"], state["consecutive_failures"]) == ("closed", 0), state
                bt.call(bt.service.settle())
                with psycopg.connect(db.safe) as conn:
                    actions = conn.execute("SELECT action, details->>'outcome' FROM safe.journal WHERE incident_id = %s AND action LIKE 'camera%%'",
                                           (uuid.UUID(second["incident_id"]),)).fetchall()
                    unavailable = conn.execute("SELECT count(*) FROM safe.journal WHERE action = 'camera_unavailable'").fetchone()
                assert actions == [("camera_move_busy", "busy")] and unavailable == (0,)
                assert [c.preset_token for c in sim.commands] == ["p-s-north"]
            finally:
                feed.stop()
                pub.close()
