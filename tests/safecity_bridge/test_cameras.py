"""Camera registry validation, selection (range/sector/nearest) and aiming geometry."""

from __future__ import annotations

import math

import pytest
from pydantic import SecretStr, ValidationError

from safecity_bridge.cameras import (
    CameraConfig,
    CameraConfigError,
    CameraRegistry,
    CannotAim,
    CircuitBreaker,
    PanTiltCalibration,
    PresetConfig,
    plan_aim,
    resolve_password,
    select_cameras,
)
from safecity_bridge.cameras.aiming import absolute_position
from safecity_bridge.cameras.selection import camera_view
from safecity_bridge.geo import LocalFrame
from safecity_bridge.localisation import SourceEstimate

CITY = LocalFrame(45.4397, 4.3872)


def ll(e: float, n: float) -> tuple[float, float]:
    lat, lon, _ = CITY.to_geodetic(e, n)
    return float(lat), float(lon)


def camera(cid: str, e: float, n: float, **kw) -> CameraConfig:
    lat, lon = ll(e, n)
    base = {"id": cid, "host": "127.0.0.1", "port": 8000, "username": "op", "password": "pw", "latitude": lat, "longitude": lon}
    return CameraConfig(**(base | kw))


def estimate(e: float, n: float, uncertainty: float = 5.0, method: str = "tdoa", sensors=("s1", "s2", "s3")) -> SourceEstimate:
    lat, lon = ll(e, n)
    return SourceEstimate(lat=lat, lon=lon, uncertainty_m=uncertainty, method=method, sensor_ids=sensors)


def preset(token: str, e: float, n: float, **kw) -> PresetConfig:
    lat, lon = ll(e, n)
    return PresetConfig(token=token, latitude=lat, longitude=lon, **kw)


# --- registry ---------------------------------------------------------------------------


def test_exactly_one_password_source_is_required():
    with pytest.raises(ValidationError, match="exactly one of password, password_env, password_file"):
        camera("c1", 0, 0, password=None)
    with pytest.raises(ValidationError, match="exactly one"):
        camera("c1", 0, 0, password_env="CAM_PW")  # and password="pw" from the base


def test_passwords_resolve_from_env_or_secret_file(tmp_path):
    secret = tmp_path / "cam-2"
    secret.write_text("from-file\n")
    from_env = camera("c1", 0, 0, password=None, password_env="CAM1_PASSWORD")
    from_file = camera("c2", 0, 0, password=None, password_file=secret)
    assert resolve_password(from_env, {"CAM1_PASSWORD": "from-env"}).get_secret_value() == "from-env"
    assert resolve_password(from_file, {}).get_secret_value() == "from-file"
    with pytest.raises(CameraConfigError, match="CAM1_PASSWORD is not set"):
        resolve_password(from_env, {})
    with pytest.raises(CameraConfigError, match="cannot read password_file"):
        resolve_password(camera("c3", 0, 0, password=None, password_file=tmp_path / "absent"), {})
    assert "pw" not in repr(camera("c4", 0, 0))  # SecretStr never printed
    assert isinstance(camera("c4", 0, 0).password, SecretStr)


def test_registry_rejects_bad_entries_with_clear_messages():
    with pytest.raises(ValidationError, match=r"duplicate camera id\(s\) \['c1'\]"):
        CameraRegistry(cameras=[camera("c1", 0, 0), camera("c1", 10, 0)])
    with pytest.raises(ValidationError, match=r"duplicate preset token\(s\) \['p1'\]"):
        camera("c1", 0, 0, presets=[preset("p1", 0, 50), preset("p1", 50, 0)])
    with pytest.raises(ValidationError, match="hfov_tele_deg .* must be narrower"):
        PanTiltCalibration(hfov_wide_deg=30, hfov_tele_deg=40)
    with pytest.raises(ValidationError, match="tilt_min_deg and tilt_max_deg must differ"):
        PanTiltCalibration(tilt_min_deg=-10, tilt_max_deg=-10)
    with pytest.raises(ValidationError, match="mounting_height_m"):
        camera("c1", 0, 0, mounting_height_m=0.2)
    with pytest.raises(ValidationError, match="path"):
        camera("c1", 0, 0, path="/custom")
    with pytest.raises(ValidationError, match="extra"):
        camera("c1", 0, 0, pasword="typo")
    assert CameraRegistry(cameras=[camera("c1", 0, 0)]).get("c1").id == "c1"


# --- selection -------------------------------------------------------------------------


def test_selection_picks_nearest_cameras_in_range_and_sector():
    cams = [
        camera("far", 400, 0, range_m=300),  # 350 m away: out of range
        camera("behind", 60, 60, sector_min_bearing_deg=0, sector_max_bearing_deg=90),  # source is to its south-west
        camera("near", 0, 80, sector_min_bearing_deg=90, sector_max_bearing_deg=270),  # looks south: sees it
        camera("mid", -120, 0),  # full circle, 170 m
        camera("off", 10, 10, enabled=False),
    ]
    src = estimate(50, 0)
    picked = select_cameras(cams, src.lat, src.lon, n=3)
    assert [c.camera.id for c in picked] == ["near", "mid"]
    assert picked[0].distance_m == pytest.approx(math.hypot(50, 80), abs=0.05)
    assert picked[0].bearing_deg == pytest.approx(math.degrees(math.atan2(50, -80)) % 360, abs=0.05)
    assert [c.camera.id for c in select_cameras(cams, src.lat, src.lon, n=1)] == ["near"]
    assert [c.camera.id for c in select_cameras(cams, src.lat, src.lon, n=3, exclude={"near"})] == ["mid"]
    nowhere = estimate(3000, 3000)
    assert select_cameras(cams, nowhere.lat, nowhere.lon) == []


def test_sector_wrapping_past_north():
    cam = camera("n", 0, 0, sector_min_bearing_deg=300, sector_max_bearing_deg=60)
    for (e, n), expected in [((0, 100), True), ((-60, 100), True), ((60, 100), True), ((100, 0), False), ((0, -100), False)]:
        src = estimate(e, n)
        assert bool(select_cameras([cam], src.lat, src.lon)) is expected, (e, n)


# --- aiming ----------------------------------------------------------------------------


def test_nearest_preset_is_robust_to_a_25_m_error():
    """Presets 80 m apart; the estimate is 25 m off the true spot: still the right preset."""
    cam = camera("c", 0, 0, presets=[preset("square", 0, 100), preset("market", 80, 100), preset("school", -80, 100)])
    true_spot = (80.0, 100.0)
    for angle in range(0, 360, 30):
        est = estimate(true_spot[0] + 25 * math.cos(math.radians(angle)), true_spot[1] + 25 * math.sin(math.radians(angle)), uncertainty=40)
        cand = select_cameras([cam], est.lat, est.lon)[0]
        plan = plan_aim(cand, est)
        assert plan.kind == "preset" and plan.preset_token == "market", angle
        assert plan.preset_offset_m == pytest.approx(25.0, abs=0.1)


def test_single_sensor_estimate_prefers_that_sensors_preset():
    cam = camera("c", 0, 0, presets=[preset("p-near", 0, 60), preset("p-s7", 0, 120, sensor_id="s7")])
    est = estimate(0, 70, uncertainty=150, method="sensor", sensors=("s7",))
    plan = plan_aim(select_cameras([cam], est.lat, est.lon)[0], est)
    assert plan.preset_token == "p-s7"


def test_absolute_move_only_when_calibrated_and_precise():
    cal = PanTiltCalibration(calibrated=True, pan_zero_bearing_deg=30.0, tilt_min_deg=-90.0, tilt_max_deg=30.0)
    cam = camera("c", 0, 0, mounting_height_m=9.0, calibration=cal, presets=[preset("p", 0, 100)])
    precise, loose = estimate(100, 50, uncertainty=8), estimate(100, 50, uncertainty=30)
    cand = select_cameras([cam], precise.lat, precise.lon)[0]
    plan = plan_aim(cand, precise, absolute_max_uncertainty_m=15)
    assert plan.kind == "absolute"
    # Geometry by hand: bearing atan2(E, N) relative to pan zero over ±180°.
    bearing = math.degrees(math.atan2(100, 50))
    assert plan.pan == pytest.approx((bearing - 30.0) / 180.0, abs=1e-3)
    d = math.hypot(100, 50)
    elevation = -math.degrees(math.atan2(9.0 - 1.0, d))
    assert plan.tilt == pytest.approx(-1 + 2 * (elevation + 90.0) / 120.0, abs=1e-3)
    assert 0.0 < plan.zoom < 1.0
    assert plan_aim(cand, loose, absolute_max_uncertainty_m=15).kind == "preset"
    uncalibrated = camera("u", 0, 0, presets=[preset("p", 0, 100)])
    assert plan_aim(select_cameras([uncalibrated], precise.lat, precise.lon)[0], precise).kind == "preset"


def test_zoom_grows_with_distance_and_shrinks_with_uncertainty():
    cam = camera("c", 0, 0, calibration=PanTiltCalibration(calibrated=True, view_width_m=30, hfov_wide_deg=60, hfov_tele_deg=3))
    zooms = [absolute_position(cam, d, 90.0)[2] for d in (20, 100, 300, 600)]
    assert zooms == sorted(zooms) and zooms[0] == 0.0 and zooms[-1] > 0.5
    assert absolute_position(cam, 300, 90.0, uncertainty_m=60)[2] < absolute_position(cam, 300, 90.0, uncertainty_m=5)[2]
    # Framed width at the chosen zoom equals the requested width (factor linear in zoom).
    pan, tilt, z = absolute_position(cam, 300, 90.0)
    factor = 1 + z * (math.tan(math.radians(30)) / math.tan(math.radians(1.5)) - 1)
    hfov = 2 * math.atan(math.tan(math.radians(30)) / factor)
    slant = math.hypot(300, cam.mounting_height_m - 1.0)
    assert 2 * slant * math.tan(hfov / 2) == pytest.approx(30.0, rel=1e-3)


def test_pan_range_limits_and_direction():
    cal = PanTiltCalibration(calibrated=True, pan_zero_bearing_deg=90.0, pan_range_deg=180.0, pan_direction=-1)
    cam = camera("c", 0, 0, calibration=cal)
    # bearing 135 = 45° clockwise of pan zero; counter-clockwise pan axis: pan = -45/90
    assert absolute_position(cam, 100, 135.0)[0] == pytest.approx(-0.5)
    with pytest.raises(CannotAim, match="outside the ±90.0° pan range"):
        absolute_position(cam, 100, 300.0)
    bare = camera("b", 0, 0)
    est = estimate(0, 50)
    with pytest.raises(CannotAim, match="no preset and is not calibrated"):
        plan_aim(select_cameras([bare], est.lat, est.lon)[0], est)


def test_camera_view_matches_enu_geometry():
    cam = camera("c", 100, 100)
    d, b = camera_view(cam, *ll(100, 300))
    assert d == pytest.approx(200.0, abs=0.02) and b == pytest.approx(0.0, abs=0.01)


# --- breaker ---------------------------------------------------------------------------


def test_breaker_opens_then_half_opens_after_cooldown():
    now = [0.0]
    b = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=lambda: now[0])
    assert b.allow() and b.state == "closed"
    b.record_failure("timeout")
    assert b.state == "closed"
    b.record_failure("timeout")
    assert b.state == "open" and not b.allow() and b.retry_in_s() == 10
    now[0] = 10.0
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # a single trial at a time
    b.record_failure("still dead")
    assert b.state == "open"
    now[0] = 25.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.consecutive_failures == 0 and b.last_error is None
