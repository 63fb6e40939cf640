"""The ONVIF camera simulator speaks the real protocol: checked with the real client and raw SOAP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import zeep.exceptions
from onvif import ONVIFCamera

from simulators import onvif_camera
from simulators.onvif_camera import OnvifCameraSimulator, PtzCommand, SimulatedCamera
from simulators.onvif_ptz import Preset

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "operator", "correct horse"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def received() -> list[PtzCommand]:
    return []


@pytest.fixture
def sim(received) -> Iterator[OnvifCameraSimulator]:
    cam = SimulatedCamera(name="sim-1", users={USER: PASSWORD}, presets=[Preset("p1", "Square", 0.25, -0.5, 0.1), Preset("p2", "Market", -0.75, 0.0, 0.0)], speed_per_s=2.0)
    with OnvifCameraSimulator(cam, on_command=received.append) as s:
        yield s


async def connect(sim: OnvifCameraSimulator, password: str = PASSWORD) -> ONVIFCamera:
    cam = ONVIFCamera("127.0.0.1", sim.port, USER, password, no_cache=True)
    await cam.update_xaddrs()
    return cam


def soap(body: str, *, user: str | None = USER, password: str = PASSWORD, created: str | None = None, nonce: bytes | None = None, digest: bool = True) -> str:
    """A hand-built SOAP 1.2 request with a UsernameToken computed from the spec, not the library."""
    header = ""
    if user is not None:
        nonce = nonce if nonce is not None else os.urandom(16)
        created = created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if digest:
            pw = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
            ptype = "PasswordDigest"
        else:
            pw, ptype = password, "PasswordText"
        header = (
            '<env:Header><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" '
            'xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:UsernameToken>'
            f"<wsse:Username>{user}</wsse:Username>"
            f'<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#{ptype}">{pw}</wsse:Password>'
            f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce><wsu:Created>{created}</wsu:Created>"
            "</wsse:UsernameToken></wsse:Security></env:Header>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl">'
        f"{header}<env:Body>{body}</env:Body></env:Envelope>"
    )


GOTO_P1 = "<tptz:GotoPreset><tptz:ProfileToken>profile_1</tptz:ProfileToken><tptz:PresetToken>p1</tptz:PresetToken></tptz:GotoPreset>"


def post(sim: OnvifCameraSimulator, path: str, envelope: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{sim.port}{path}", content=envelope.encode(), headers={"Content-Type": "application/soap+xml; charset=utf-8"}, timeout=5)


def assert_not_authorized(resp: httpx.Response, why: str) -> None:
    assert resp.status_code == 400
    assert "<env:Value>env:Sender</env:Value>" in resp.text
    assert "<env:Value>ter:NotAuthorized</env:Value>" in resp.text
    assert why in resp.text


# --- WS-Security UsernameToken digest --------------------------------------------------


def test_digest_computed_per_spec_is_accepted(sim):
    resp = post(sim, "/onvif/ptz_service", soap(GOTO_P1))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/soap+xml")
    assert "GotoPresetResponse" in resp.text
    assert sim.commands[-1].preset_token == "p1" and sim.commands[-1].user == USER


def test_wrong_password_stale_created_replay_and_plaintext_are_refused(sim):
    assert_not_authorized(post(sim, "/onvif/ptz_service", soap(GOTO_P1, password="guess")), "wrong user name or password")
    assert_not_authorized(post(sim, "/onvif/ptz_service", soap(GOTO_P1, user="intruder")), "wrong user name or password")
    stale = (datetime.now(timezone.utc) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_not_authorized(post(sim, "/onvif/ptz_service", soap(GOTO_P1, created=stale)), "stale")
    future = (datetime.now(timezone.utc) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_not_authorized(post(sim, "/onvif/ptz_service", soap(GOTO_P1, created=future)), "in the future")
    nonce, created = os.urandom(16), datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert post(sim, "/onvif/ptz_service", soap(GOTO_P1, nonce=nonce, created=created)).status_code == 200
    assert_not_authorized(post(sim, "/onvif/ptz_service", soap(GOTO_P1, nonce=nonce, created=created)), "replayed nonce")
    assert_not_authorized(post(sim, "/onvif/ptz_service", soap(GOTO_P1, digest=False)), "only PasswordDigest")
    assert_not_authorized(post(sim, "/onvif/ptz_service", soap(GOTO_P1, user=None)), "no WS-Security UsernameToken")
    assert len(sim.commands) == 1  # only the one authenticated move
    assert sim.auth_failures == 7


def test_system_date_is_pre_auth_and_malformed_requests_get_faults(sim):
    resp = post(sim, "/onvif/device_service", soap("<tds:GetSystemDateAndTime/>", user=None))
    assert resp.status_code == 200 and "<tt:UTCDateTime>" in resp.text
    bad = post(sim, "/onvif/ptz_service", "<not-soap/>")
    assert bad.status_code == 400 and "ter:VersionMismatch" in bad.text
    broken = post(sim, "/onvif/ptz_service", "<env:Envelope")
    assert broken.status_code == 400 and "ter:WellFormed" in broken.text


# --- through the real client --------------------------------------------------------------


@pytest.mark.anyio
async def test_real_client_discovers_services_profiles_presets(sim):
    cam = await connect(sim)
    try:
        assert cam.xaddrs["http://www.onvif.org/ver20/ptz/wsdl"] == f"http://127.0.0.1:{sim.port}/onvif/ptz_service"
        info = await (await cam.create_devicemgmt_service()).GetDeviceInformation()
        assert info.SerialNumber == "sim-1" and info.Manufacturer == "Sonopolis"
        media, ptz = await cam.create_media_service(), await cam.create_ptz_service()
        [profile] = await media.GetProfiles()
        assert profile.token == "profile_1" and profile.PTZConfiguration.NodeToken == "ptz_node_1"
        presets = await ptz.GetPresets({"ProfileToken": "profile_1"})
        assert [(p.token, p.Name, p.PTZPosition.PanTilt.x, p.PTZPosition.PanTilt.y) for p in presets] == [("p1", "Square", 0.25, -0.5), ("p2", "Market", -0.75, 0.0)]
        [node] = await ptz.GetNodes()
        assert node.SupportedPTZSpaces.AbsolutePanTiltPositionSpace[0].XRange.Max == 1.0
        [conf] = await ptz.GetConfigurations()
        assert conf.token == "ptz_config_1"
    finally:
        await cam.close()


@pytest.mark.anyio
async def test_moves_are_recorded_with_timestamps_and_status_tracks_the_head(sim, received):
    cam = await connect(sim)
    try:
        ptz = await cam.create_ptz_service()
        req = ptz.create_type("GotoPreset")
        req.ProfileToken, req.PresetToken = "profile_1", "p2"
        before = time.time()
        await ptz.GotoPreset(req)
        status = await ptz.GetStatus({"ProfileToken": "profile_1"})
        assert status.MoveStatus.PanTilt == "MOVING"  # 0.75 at 2 units/s takes 375 ms
        assert -0.75 < status.Position.PanTilt.x < 0.0
        await asyncio.sleep(0.45)
        status = await ptz.GetStatus({"ProfileToken": "profile_1"})
        assert status.MoveStatus.PanTilt == "IDLE" and status.Position.PanTilt.x == pytest.approx(-0.75)
        move = ptz.create_type("AbsoluteMove")
        move.ProfileToken = "profile_1"
        move.Position = {"PanTilt": {"x": 0.125, "y": -0.25}, "Zoom": {"x": 0.5}}
        await ptz.AbsoluteMove(move)
        assert [(c.operation, c.preset_token, c.pan, c.tilt, c.zoom) for c in received] == [("GotoPreset", "p2", -0.75, 0.0, 0.0), ("AbsoluteMove", None, 0.125, -0.25, 0.5)]
        assert before <= received[0].received_wall <= time.time()
        assert received[0].received_monotonic < received[1].received_monotonic
    finally:
        await cam.close()


@pytest.mark.anyio
async def test_invalid_commands_get_onvif_faults(sim):
    cam = await connect(sim)
    try:
        ptz = await cam.create_ptz_service()
        req = ptz.create_type("GotoPreset")
        req.ProfileToken, req.PresetToken = "profile_1", "nope"
        with pytest.raises(zeep.exceptions.Fault) as fault:
            await ptz.GotoPreset(req)
        assert [q.localname for q in fault.value.subcodes] == ["NoToken"]
        move = ptz.create_type("AbsoluteMove")
        move.ProfileToken = "profile_1"
        move.Position = {"PanTilt": {"x": 1.5, "y": 0.0}}
        with pytest.raises(zeep.exceptions.Fault) as fault:
            await ptz.AbsoluteMove(move)
        assert [q.localname for q in fault.value.subcodes] == ["InvalidPosition"]
        with pytest.raises(zeep.exceptions.Fault) as fault:
            await ptz.GetStatus({"ProfileToken": "other"})
        assert [q.localname for q in fault.value.subcodes] == ["NoProfile"]
        assert sim.commands == []
    finally:
        await cam.close()


@pytest.mark.anyio
async def test_wrong_password_through_the_real_client(sim):
    cam = ONVIFCamera("127.0.0.1", sim.port, USER, "wrong", no_cache=True)
    try:
        with pytest.raises(zeep.exceptions.Fault) as fault:
            await cam.update_xaddrs()  # GetServices refused, then the GetCapabilities fallback too
        assert [q.localname for q in fault.value.subcodes] == ["NotAuthorized"]
    finally:
        await cam.close()


@pytest.mark.anyio
async def test_hung_camera_times_out_and_revives(sim):
    cam = await connect(sim)
    try:
        ptz = await cam.create_ptz_service()
        sim.set_dead("hang")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await ptz.GetStatus({"ProfileToken": "profile_1"})
        sim.revive()
        status = await ptz.GetStatus({"ProfileToken": "profile_1"})
        assert status.MoveStatus.PanTilt == "IDLE"
    finally:
        await cam.close()


# --- as its own process (demo) ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("password", [PASSWORD, "-Xq9" + PASSWORD], ids=["plain", "leading dash"])
async def test_runs_as_a_process_and_logs_commands(tmp_path, password):
    """Started with the demo's own argv; a generated password may begin with '-' (token_urlsafe, 1 in 64)."""
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps([{"token": "p9", "name": "Gate", "pan": 0.5, "tilt": 0.1, "zoom": 0.2}]))
    log = tmp_path / "ptz.jsonl"
    argv = onvif_camera.command(port=0, name="proc-cam", user=USER, password=password, presets=presets, command_log=log)
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        cam = ONVIFCamera("127.0.0.1", port, USER, password, no_cache=True)
        await cam.update_xaddrs()
        ptz = await cam.create_ptz_service()
        req = ptz.create_type("GotoPreset")
        req.ProfileToken, req.PresetToken = "profile_1", "p9"
        await ptz.GotoPreset(req)
        await cam.close()
        [entry] = [json.loads(x) for x in log.read_text().splitlines()]
        assert entry["camera"] == "proc-cam" and entry["preset_token"] == "p9" and entry["pan"] == 0.5
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
