"""PtzController driven through the real onvif-zeep-async client against the ONVIF simulator."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import pytest

from safecity_bridge.cameras import CameraConfig, PanTiltCalibration, PresetConfig, PtzController, PtzSettings
from safecity_bridge.geo import LocalFrame
from safecity_bridge.localisation import SourceEstimate
from simulators.onvif_camera import OnvifCameraSimulator, SimulatedCamera
from simulators.onvif_ptz import Preset

CITY = LocalFrame(45.4397, 4.3872)
ENV = {"CAM_A_PASSWORD": "a-secret", "CAM_B_PASSWORD": "b-secret"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ll(e: float, n: float) -> tuple[float, float]:
    lat, lon, _ = CITY.to_geodetic(e, n)
    return float(lat), float(lon)


def estimate(e: float, n: float, uncertainty: float) -> SourceEstimate:
    lat, lon = ll(e, n)
    return SourceEstimate(lat=lat, lon=lon, uncertainty_m=uncertainty, method="tdoa", sensor_ids=("s1", "s2", "s3"))


def config(cid: str, sim: OnvifCameraSimulator, e: float, n: float, *, env: str, presets=(), calibration=None, **kw) -> CameraConfig:
    lat, lon = ll(e, n)
    plist = [PresetConfig(token=t, latitude=ll(pe, pn)[0], longitude=ll(pe, pn)[1]) for t, pe, pn in presets]
    return CameraConfig(id=cid, host="127.0.0.1", port=sim.port, username="operator", password_env=env, latitude=lat, longitude=lon,
                        presets=plist, calibration=calibration or PanTiltCalibration(), **kw)


@pytest.fixture
def cam_a() -> Iterator[OnvifCameraSimulator]:
    """Camera A at the city origin, presets on the square (north) and the market (east)."""
    cam = SimulatedCamera(name="cam-a", users={"operator": "a-secret"}, presets=[Preset("square", "Square", 0.0, 0.3), Preset("market", "Market", 0.5, 0.3)])
    with OnvifCameraSimulator(cam) as sim:
        yield sim


@pytest.fixture
def cam_b() -> Iterator[OnvifCameraSimulator]:
    cam = SimulatedCamera(name="cam-b", users={"operator": "b-secret"}, presets=[Preset("station", "Station", -0.5, 0.2)])
    with OnvifCameraSimulator(cam) as sim:
        yield sim


FAST = PtzSettings(command_timeout_s=0.3, total_budget_s=0.8, retries=1, retry_backoff_s=0.01, breaker_failures=2, breaker_cooldown_s=5.0)


@pytest.mark.anyio
async def test_camera_moves_to_the_preset_nearest_the_estimate(cam_a):
    cfg = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120), ("market", 110, 10)])
    ptz = PtzController([cfg], FAST, ENV)
    try:
        assert await ptz.start() == {"cam-a": None}
        outcomes = await ptz.steer(estimate(95, 30, uncertainty=40))  # ~25 m from the market preset
        assert [(o.camera_id, o.outcome, o.preset) for o in outcomes] == [("cam-a", "moved_preset", "market")]
        cmd = cam_a.wait_for_command()
        assert (cmd.operation, cmd.preset_token, cmd.profile_token, cmd.user) == ("GotoPreset", "market", "profile_1", "operator")
        assert outcomes[0].latency_ms > 0 and outcomes[0].attempts == 1
        # the camera reports the preset's position once the head has arrived
        time.sleep(0.3)
        position, reason = await ptz.status("cam-a")
        assert reason is None and position["pan"] == pytest.approx(0.5) and position["tilt"] == pytest.approx(0.3) and not position["moving"]
    finally:
        await ptz.close()


@pytest.mark.anyio
async def test_calibrated_camera_gets_the_computed_pan_tilt_zoom(cam_a):
    cal = PanTiltCalibration(calibrated=True, pan_zero_bearing_deg=45.0, tilt_min_deg=-90.0, tilt_max_deg=10.0, view_width_m=20.0)
    cfg = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)], calibration=cal, mounting_height_m=8.0)
    ptz = PtzController([cfg], FAST, ENV)
    try:
        await ptz.start()
        [outcome] = await ptz.steer(estimate(-60, 80, uncertainty=4))
        assert outcome.outcome == "moved_absolute"
        cmd = cam_a.wait_for_command()
        assert cmd.operation == "AbsoluteMove"
        # Expected values from first principles, independent of the aiming code.
        bearing = math.degrees(math.atan2(-60, 80)) % 360  # 323.13°
        rel = ((bearing - 45.0 + 180) % 360) - 180  # -81.87°
        distance = math.hypot(-60, 80)
        elevation = -math.degrees(math.atan((8.0 - 1.0) / distance))
        assert cmd.pan == pytest.approx(rel / 180.0, abs=1e-4)
        assert cmd.tilt == pytest.approx(-1 + 2 * (elevation + 90.0) / 100.0, abs=1e-4)
        k_max = math.tan(math.radians(30)) / math.tan(math.radians(1.5))
        hfov = 2 * math.atan(20.0 / 2 / math.hypot(distance, 7.0))
        assert cmd.zoom == pytest.approx((math.tan(math.radians(30)) / math.tan(hfov / 2) - 1) / (k_max - 1), abs=1e-4)
        assert (outcome.pan, outcome.tilt, outcome.zoom) == pytest.approx((cmd.pan, cmd.tilt, cmd.zoom), abs=1e-6)
    finally:
        await ptz.close()


@pytest.mark.anyio
async def test_sessions_are_reused_so_a_move_is_one_soap_call(cam_a):
    cfg = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120), ("market", 110, 10)])
    # generous timeouts: a retry after a slow answer on a loaded CI box would resend a command
    ptz = PtzController([cfg], PtzSettings(command_timeout_s=3.0, total_budget_s=5.0), ENV)
    try:
        await ptz.start()
        discovery = cam_a.requests["GetServices"] + cam_a.requests["GetProfiles"] + cam_a.requests["GetPresets"]
        for i in range(20):
            await ptz.steer(estimate(0 if i % 2 else 110, 120 if i % 2 else 10, uncertainty=30))
        assert cam_a.requests["GotoPreset"] == 20
        assert cam_a.requests["GetServices"] + cam_a.requests["GetProfiles"] + cam_a.requests["GetPresets"] == discovery
        assert [c.preset_token for c in cam_a.commands[:4]] == ["market", "square", "market", "square"]
    finally:
        await ptz.close()


@pytest.mark.anyio
async def test_hung_camera_is_unavailable_quickly_and_opens_the_breaker(cam_a, cam_b):
    now = [1000.0]
    a = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)])
    b = config("cam-b", cam_b, 0, 200, env="CAM_B_PASSWORD", presets=[("station", 0, 120)])
    ptz = PtzController([a, b], FAST, ENV, clock=lambda: now[0])
    try:
        assert await ptz.start() == {"cam-a": None, "cam-b": None}
        cam_a.set_dead("hang")
        outcomes = {o.camera_id: o for o in await ptz.steer(estimate(0, 110, uncertainty=30))}
        # bounded by our hard timeout (not the library's 90 s default), whatever the machine's speed
        assert outcomes["cam-a"].outcome == "unavailable" and f"timeout after {FAST.command_timeout_s * 1000:.0f} ms" in outcomes["cam-a"].reason
        assert outcomes["cam-a"].attempts == 2  # one retry for a timeout
        assert outcomes["cam-b"].outcome == "moved_preset"  # the other camera is not held up
        assert cam_b.wait_for_command().preset_token == "station"
        await ptz.steer(estimate(0, 110, uncertainty=30))
        state = {s["camera_id"]: s for s in ptz.camera_states()}
        assert state["cam-a"]["breaker"] == "open" and state["cam-b"]["breaker"] == "closed"
        # While open, no request is even attempted: immediate "unavailable".
        sent_to_a = sum(cam_a.requests.values())
        [skipped, moved] = await ptz.steer(estimate(0, 110, uncertainty=30))
        assert skipped.camera_id == "cam-a" and skipped.outcome == "unavailable" and "circuit open" in skipped.reason
        assert skipped.attempts == 0 and sum(cam_a.requests.values()) == sent_to_a
        assert moved.camera_id == "cam-b" and moved.outcome == "moved_preset"
        # After the cooldown, a half-open trial against the revived camera closes the breaker.
        cam_a.revive()
        for _ in range(100):  # the requests held while hung are released now...
            if cam_a.dropped_while_hung:
                break
            await asyncio.sleep(0.02)
        assert cam_a.dropped_while_hung >= 1
        assert cam_a.commands == []  # ...and none of them is executed late
        now[0] += FAST.breaker_cooldown_s + 1
        outcomes = {o.camera_id: o for o in await ptz.steer(estimate(0, 110, uncertainty=30))}
        assert outcomes["cam-a"].outcome == "moved_preset"
        assert cam_a.wait_for_command().preset_token == "square"
        assert {s["camera_id"]: s["breaker"] for s in ptz.camera_states()}["cam-a"] == "closed"
    finally:
        await ptz.close()


@pytest.mark.anyio
async def test_refused_connection_is_unavailable_and_reconnects_after_revival(cam_a):
    cfg = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)])
    ptz = PtzController([cfg], FAST.model_copy(update={"breaker_failures": 5}), ENV)
    try:
        await ptz.start()
        cam_a.set_dead("refuse")
        [o] = await ptz.steer(estimate(0, 110, uncertainty=30))
        assert o.outcome == "unavailable" and "connection failed" in o.reason
        cam_a.revive()
        [o] = await ptz.steer(estimate(0, 110, uncertainty=30))
        assert o.outcome == "moved_preset", o.reason
        assert cam_a.wait_for_command().preset_token == "square"
    finally:
        await ptz.close()


@pytest.mark.anyio
async def test_wrong_password_is_unavailable_with_an_auth_reason(cam_a):
    cfg = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)])
    ptz = PtzController([cfg], FAST, {"CAM_A_PASSWORD": "not-the-password"})
    try:
        status = await ptz.start()
        assert "authentication refused" in status["cam-a"] and "NotAuthorized" in status["cam-a"]
        [o] = await ptz.steer(estimate(0, 110, uncertainty=30))
        assert o.outcome == "unavailable" and "authentication refused" in o.reason
        assert o.attempts == 1  # a refused password is not retried
        assert cam_a.commands == [] and cam_a.auth_failures >= 2
    finally:
        await ptz.close()


@pytest.mark.anyio
async def test_camera_down_at_start_is_retried_on_the_next_incident(tmp_path):
    sim = OnvifCameraSimulator(SimulatedCamera(name="late", users={"operator": "a-secret"}, presets=[Preset("square", "Square", 0.0, 0.3)]))
    sim.start()
    port = sim.port
    sim.set_dead("refuse")
    try:
        cfg = config("late", sim, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)])
        ptz = PtzController([cfg], FAST, ENV)
        status = await ptz.start()
        assert "connection failed" in status["late"]
        assert ptz.camera_states()[0]["connected"] is False
        sim.revive()
        assert sim.port == port
        [o] = await ptz.steer(estimate(0, 110, uncertainty=30))
        assert o.outcome == "moved_preset", o.reason
        assert ptz.camera_states()[0]["connected"] is True
        await ptz.close()
    finally:
        sim.stop()


@pytest.mark.anyio
async def test_no_camera_in_range_gives_no_outcome_and_unaimable_camera_says_why(cam_a):
    cfg = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD", range_m=200)  # no presets, not calibrated
    ptz = PtzController([cfg], FAST, ENV)
    try:
        await ptz.start()
        assert await ptz.steer(estimate(2000, 0, uncertainty=10)) == []
        [o] = await ptz.steer(estimate(50, 50, uncertainty=10))
        assert o.outcome == "unavailable" and "no preset and is not calibrated" in o.reason
        assert cam_a.commands == []
        assert o.to_record()["camera_id"] == "cam-a" and o.to_record()["outcome"] == "unavailable"
    finally:
        await ptz.close()


@pytest.mark.anyio
async def test_wsdls_load_offline_from_the_package(cam_a, monkeypatch):
    """Start-up must not fetch anything from the internet: only loopback connections allowed."""
    import socket

    real_connect = socket.socket.connect
    attempts: list[object] = []

    def loopback_only(self, address):  # type: ignore[no-untyped-def]
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not host.startswith("127."):
            attempts.append(address)
            raise OSError(f"network disabled in this test: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    from safecity_bridge.cameras.session import warm_wsdls, wsdl_dir

    assert (wsdl_dir() / "ptz.wsdl").is_file()
    await warm_wsdls()
    cfg = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)])
    ptz = PtzController([cfg], FAST, ENV)
    try:
        assert await ptz.start() == {"cam-a": None}
        [o] = await ptz.steer(estimate(0, 110, uncertainty=30))
        assert o.outcome == "moved_preset"
    finally:
        await ptz.close()
    assert attempts == []


@pytest.mark.anyio
async def test_camera_with_a_drifting_clock_needs_adjust_time():
    """A camera 1 h off refuses fresh WS-Security timestamps, unless the client compensates."""
    cam = SimulatedCamera(name="drift", users={"operator": "a-secret"}, presets=[Preset("square", "Square", 0.0, 0.3)], clock_offset_s=3600.0)
    with OnvifCameraSimulator(cam) as sim:
        plain = PtzController([config("drift", sim, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)])], FAST, ENV)
        try:
            status = await plain.start()
            assert "authentication refused" in status["drift"]
        finally:
            await plain.close()
        adjusted = PtzController([config("drift", sim, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)], adjust_time=True)], FAST, ENV)
        try:
            assert await adjusted.start() == {"drift": None}
            [o] = await adjusted.steer(estimate(0, 110, uncertainty=30))
            assert o.outcome == "moved_preset"
            assert sim.wait_for_command().preset_token == "square"
        finally:
            await adjusted.close()


@pytest.mark.anyio
async def test_a_camera_that_cannot_aim_does_not_take_the_place_of_one_that_can(cam_a, cam_b):
    """max_cameras=1: the nearest camera has no preset here and no calibration; the next one in range is used."""
    near = config("cam-a", cam_a, 0, 0, env="CAM_A_PASSWORD")  # no presets, not calibrated
    far = config("cam-b", cam_b, 0, 200, env="CAM_B_PASSWORD", presets=[("station", 0, 60)])
    ptz = PtzController([near, far], PtzSettings(max_cameras=1, command_timeout_s=0.3, total_budget_s=0.8, retries=1), ENV)
    try:
        await ptz.start()
        outcomes = await ptz.steer(estimate(0, 60, uncertainty=30))
        assert [(o.camera_id, o.outcome) for o in outcomes] == [("cam-a", "unavailable"), ("cam-b", "moved_preset")]
        assert "no preset and is not calibrated" in outcomes[0].reason
        assert cam_b.wait_for_command().preset_token == "station"
        assert cam_a.commands == []
    finally:
        await ptz.close()


@pytest.mark.anyio
async def test_waiting_behind_earlier_commands_does_not_open_the_breaker_of_a_working_camera():
    """Several incidents at once queue their commands on one head (one at a time, under
    its lock). A call whose budget ran out while it waited for the lock never reached
    the camera: it once counted as a camera failure, so a burst of alerts opened the
    breaker of a camera answering every command, and the next incident got no camera."""
    cam = SimulatedCamera(name="cam-slow", users={"operator": "a-secret"}, presets=[Preset("square", "Square", 0.0, 0.3)], command_delay_s=0.2)
    settings = PtzSettings(command_timeout_s=0.4, total_budget_s=0.5, retries=0, breaker_failures=3, breaker_cooldown_s=30.0)
    with OnvifCameraSimulator(cam) as sim:
        cfg = config("cam-slow", sim, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)])
        ptz = PtzController([cfg], settings, ENV)
        try:
            assert await ptz.start() == {"cam-slow": None}
            burst = [o for outcomes in await asyncio.gather(*(ptz.steer(estimate(0, 110, uncertainty=30)) for _ in range(6))) for o in outcomes]
            moved = [o for o in burst if o.outcome == "moved_preset"]
            waited = [o for o in burst if o.outcome in ("busy", "replaced") and o.attempts == 0]
            assert moved and waited, [(o.outcome, o.reason) for o in burst]
            [state] = ptz.camera_states()
            assert state["breaker"] == "closed", state
            assert all("busy" in (o.reason or "") or "replaced by a newer command" in (o.reason or "") for o in waited), [o.reason for o in waited]
            [after] = await ptz.steer(estimate(0, 110, uncertainty=30))
            assert after.outcome == "moved_preset", after.reason
        finally:
            await ptz.close()


@pytest.mark.anyio
async def test_a_move_whose_budget_ran_out_waiting_for_the_head_is_reported_busy_not_unavailable():
    """A move queued behind a long command on the same head, whose budget runs out before
    the lock is free, never reached the camera. It was reported "unavailable" (the
    journal then said camera_unavailable and the console showed a working camera as
    unavailable); it is "busy", and counts neither as a failure nor against the breaker.

    Deterministic: the head takes 1 s per move, the first move has a 3 s budget, and the
    second one (made while the first holds the head) only 0.2 s."""
    cam = SimulatedCamera(name="cam-slow", users={"operator": "a-secret"}, presets=[Preset("square", "Square", 0.0, 0.3)], command_delay_s=1.0)
    patient = PtzSettings(command_timeout_s=2.0, total_budget_s=3.0, retries=0, breaker_failures=1, breaker_cooldown_s=30.0)
    with OnvifCameraSimulator(cam) as sim:
        cfg = config("cam-slow", sim, 0, 0, env="CAM_A_PASSWORD", presets=[("square", 0, 120)])
        ptz = PtzController([cfg], patient, ENV)
        try:
            assert await ptz.start() == {"cam-slow": None}
            first = asyncio.create_task(ptz.steer(estimate(0, 110, uncertainty=30)))
            await asyncio.sleep(0.1)  # the first move holds the head for 1 s from here
            ptz.settings = patient.model_copy(update={"total_budget_s": 0.2})
            [waited] = await ptz.steer(estimate(0, 110, uncertainty=30))
            [moved] = await first
            assert moved.outcome == "moved_preset", moved.reason
            assert (waited.outcome, waited.attempts) == ("busy", 0), (waited.outcome, waited.reason)
            assert "busy with earlier commands" in (waited.reason or ""), waited.reason
            [state] = ptz.camera_states()
            assert (state["breaker"], state["consecutive_failures"], state["last_error"]) == ("closed", 0, None), state
            assert [c.preset_token for c in sim.commands] == ["square"]
        finally:
            await ptz.close()


@pytest.mark.anyio
async def test_absolute_move_names_the_generic_space_whatever_the_cameras_default():
    """Our pan/tilt/zoom are generic-space values (-1..1). A position that names no space
    is read in the camera's default space (ONVIF), and some cameras are configured in
    degrees: pan -0.45 (81° left) then turned the head by less than half a degree."""
    from simulators.onvif_ptz import PT_DEGREES_SPACE

    cam = SimulatedCamera(name="cam-deg", users={"operator": "a-secret"}, default_pan_tilt_space=PT_DEGREES_SPACE)
    cal = PanTiltCalibration(calibrated=True, pan_zero_bearing_deg=45.0, tilt_min_deg=-90.0, tilt_max_deg=10.0, view_width_m=20.0)
    with OnvifCameraSimulator(cam) as sim:
        cfg = config("cam-deg", sim, 0, 0, env="CAM_A_PASSWORD", calibration=cal, mounting_height_m=8.0)
        ptz = PtzController([cfg], FAST, ENV)
        try:
            await ptz.start()
            [outcome] = await ptz.steer(estimate(-60, 80, uncertainty=4))
            assert outcome.outcome == "moved_absolute", outcome.reason
            cmd = sim.wait_for_command()
            assert (cmd.pan, cmd.tilt) == pytest.approx((outcome.pan, outcome.tilt), abs=1e-6)
            assert cmd.pan == pytest.approx(-81.87 / 180.0, abs=1e-3)
        finally:
            await ptz.close()


@pytest.mark.anyio
async def test_a_burst_of_commands_to_one_camera_ends_on_the_newest_target():
    """Commands to one head queue under its lock, oldest first. In a burst (one shot heard
    by sensor after sensor re-aims the camera at each better estimate), the older ones
    used the head's time and the newest, most precise one ran out of budget waiting:
    the camera stayed on a stale target. A queued command that a newer one replaces is
    now skipped, reported as "replaced" (not "unavailable": the camera did nothing wrong),
    and does not count against the camera."""
    targets = [(f"p{i}", 0, 60 + 40 * i) for i in range(5)]
    cam = SimulatedCamera(name="cam-slow", users={"operator": "a-secret"},
                          presets=[Preset(t, t, 0.0, 0.1 * i) for i, (t, _, _) in enumerate(targets)], command_delay_s=0.2)
    settings = PtzSettings(command_timeout_s=0.4, total_budget_s=0.5, retries=0, breaker_failures=3)
    with OnvifCameraSimulator(cam) as sim:
        cfg = config("cam-slow", sim, 0, 0, env="CAM_A_PASSWORD", presets=targets)
        ptz = PtzController([cfg], settings, ENV)
        try:
            await ptz.start()
            burst = await asyncio.gather(*(ptz.steer(estimate(e, n, uncertainty=30)) for _, e, n in targets))
            outcomes = [o for (o,) in burst]
            assert outcomes[-1].outcome == "moved_preset" and outcomes[-1].preset == "p4", outcomes[-1].reason
            time.sleep(0.05)
            assert sim.commands[-1].preset_token == "p4"
            skipped = [o for o in outcomes[1:-1]]
            assert all(o.outcome == "replaced" and "replaced by a newer command" in (o.reason or "") and o.attempts == 0 for o in skipped), \
                [(o.outcome, o.reason) for o in skipped]
            assert ptz.camera_states()[0]["consecutive_failures"] == 0
        finally:
            await ptz.close()
