"""The PTZ head of the simulated camera: presets, motion over time, and the PTZ/media XML.

Pan and tilt are in the ONVIF generic position space (-1..1), zoom in 0..1. A camera
may declare another default absolute space (degrees, as some configure theirs): an
``AbsoluteMove`` whose position names no space is then read in degrees, as the
standard says, and converted to the generic space it records. A move is
not instantaneous: the head travels at ``speed_per_s`` so GetStatus reports MOVING,
then IDLE at the target, as a real dome does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from simulators.onvif_soap import SoapFault, SoapRequest, attr, fmt, text

PT_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
ZOOM_SPACE = "http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"
PT_DEGREES_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/SphericalPositionSpaceDegrees"
PT_SPEED_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/GenericSpeedSpace"
ZOOM_SPEED_SPACE = "http://www.onvif.org/ver10/tptz/ZoomSpaces/ZoomGenericSpeedSpace"
NODE_TOKEN = "ptz_node_1"
CONFIG_TOKEN = "ptz_config_1"


@dataclass(frozen=True)
class Preset:
    token: str
    name: str
    pan: float
    tilt: float
    zoom: float = 0.0


@dataclass(frozen=True)
class AcceptedMove:
    profile_token: str
    preset_token: str | None
    pan: float | None
    tilt: float | None
    zoom: float | None


class CameraState:
    """Position of the head; thread-safe because the test thread may read it too."""

    def __init__(self, presets: list[Preset], speed_per_s: float, default_pan_tilt_space: str = PT_SPACE):
        self.presets = {p.token: p for p in presets}
        self.default_pan_tilt_space = default_pan_tilt_space
        self.speed = speed_per_s
        self._lock = threading.Lock()
        self._from = (0.0, 0.0, 0.0)
        self._to = (0.0, 0.0, 0.0)
        self._t0 = 0.0
        self._duration = 0.0

    def move_to(self, pan: float, tilt: float, zoom: float) -> None:
        with self._lock:
            now = time.monotonic()
            current = self._position_locked(now)
            self._from, self._to, self._t0 = current, (pan, tilt, zoom), now
            self._duration = max(abs(a - b) for a, b in zip(current, self._to)) / self.speed

    def stop(self) -> None:
        with self._lock:
            here = self._position_locked(time.monotonic())
            self._from = self._to = here
            self._duration = 0.0

    def position(self) -> tuple[tuple[float, float, float], bool]:
        """(pan, tilt, zoom), moving?"""
        with self._lock:
            now = time.monotonic()
            return self._position_locked(now), now < self._t0 + self._duration

    def _position_locked(self, now: float) -> tuple[float, float, float]:
        if self._duration <= 0 or now >= self._t0 + self._duration:
            return self._to
        f = (now - self._t0) / self._duration
        return tuple(a + (b - a) * f for a, b in zip(self._from, self._to))  # type: ignore[return-value]

    def profile_xml(self, profile_token: str) -> str:
        return f'<trt:Profiles token={attr(profile_token)} fixed="true"><tt:Name>main</tt:Name>{configuration_xml("tt:PTZConfiguration", self.default_pan_tilt_space)}</trt:Profiles>'


def configuration_xml(tag: str, default_pan_tilt_space: str = PT_SPACE) -> str:
    return (
        f'<{tag} token="{CONFIG_TOKEN}"><tt:Name>ptz</tt:Name><tt:UseCount>1</tt:UseCount>'
        f"<tt:NodeToken>{NODE_TOKEN}</tt:NodeToken>"
        f"<tt:DefaultAbsolutePantTiltPositionSpace>{default_pan_tilt_space}</tt:DefaultAbsolutePantTiltPositionSpace>"
        f"<tt:DefaultAbsoluteZoomPositionSpace>{ZOOM_SPACE}</tt:DefaultAbsoluteZoomPositionSpace>"
        f'<tt:DefaultPTZSpeed><tt:PanTilt x="1" y="1" space="{PT_SPEED_SPACE}"/><tt:Zoom x="1" space="{ZOOM_SPEED_SPACE}"/></tt:DefaultPTZSpeed>'
        "<tt:DefaultPTZTimeout>PT5S</tt:DefaultPTZTimeout>"
        f"<tt:PanTiltLimits><tt:Range><tt:URI>{PT_SPACE}</tt:URI><tt:XRange><tt:Min>-1</tt:Min><tt:Max>1</tt:Max></tt:XRange>"
        "<tt:YRange><tt:Min>-1</tt:Min><tt:Max>1</tt:Max></tt:YRange></tt:Range></tt:PanTiltLimits>"
        f"<tt:ZoomLimits><tt:Range><tt:URI>{ZOOM_SPACE}</tt:URI><tt:XRange><tt:Min>0</tt:Min><tt:Max>1</tt:Max></tt:XRange></tt:Range></tt:ZoomLimits>"
        f"</{tag}>"
    )


def _vector_xml(pan: float, tilt: float, zoom: float) -> str:
    return f'<tt:PanTilt x="{fmt(pan)}" y="{fmt(tilt)}" space="{PT_SPACE}"/><tt:Zoom x="{fmt(zoom)}" space="{ZOOM_SPACE}"/>'


def _check_profile(req: SoapRequest, profile_token: str) -> str:
    token = req.text("tptz:ProfileToken")
    if token != profile_token:
        raise SoapFault("Sender", "NoProfile", f"unknown profile token {token!r}")
    return token


def _float_attr(el, name: str, lo: float, hi: float) -> float | None:  # type: ignore[no-untyped-def]
    if el is None or el.get(name) is None:
        return None
    try:
        v = float(el.get(name))
    except ValueError as exc:
        raise SoapFault("Sender", "InvalidArgVal", f"{name} is not a number") from exc
    if not lo <= v <= hi:
        raise SoapFault("Sender", "InvalidPosition", f"{name}={v} outside [{lo}, {hi}]")
    return v


def ptz_operations(state: CameraState, profile_token: str, op: str, req: SoapRequest) -> tuple[str, AcceptedMove | None]:
    """Answer one PTZ-service operation: (response body XML, the move it caused if any)."""
    if op == "GetNodes":
        node = (
            f'<tptz:PTZNode token="{NODE_TOKEN}" FixedHomePosition="false"><tt:Name>head</tt:Name><tt:SupportedPTZSpaces>'
            f"<tt:AbsolutePanTiltPositionSpace><tt:URI>{PT_SPACE}</tt:URI><tt:XRange><tt:Min>-1</tt:Min><tt:Max>1</tt:Max></tt:XRange>"
            "<tt:YRange><tt:Min>-1</tt:Min><tt:Max>1</tt:Max></tt:YRange></tt:AbsolutePanTiltPositionSpace>"
            f"<tt:AbsoluteZoomPositionSpace><tt:URI>{ZOOM_SPACE}</tt:URI><tt:XRange><tt:Min>0</tt:Min><tt:Max>1</tt:Max></tt:XRange></tt:AbsoluteZoomPositionSpace>"
            f"</tt:SupportedPTZSpaces><tt:MaximumNumberOfPresets>{max(len(state.presets), 64)}</tt:MaximumNumberOfPresets>"
            "<tt:HomeSupported>false</tt:HomeSupported></tptz:PTZNode>"
        )
        return f"<tptz:GetNodesResponse>{node}</tptz:GetNodesResponse>", None
    if op == "GetConfigurations":
        return f"<tptz:GetConfigurationsResponse>{configuration_xml('tptz:PTZConfiguration', state.default_pan_tilt_space)}</tptz:GetConfigurationsResponse>", None
    if op == "GetPresets":
        _check_profile(req, profile_token)
        items = "".join(
            f"<tptz:Preset token={attr(p.token)}><tt:Name>{text(p.name)}</tt:Name><tt:PTZPosition>{_vector_xml(p.pan, p.tilt, p.zoom)}</tt:PTZPosition></tptz:Preset>"
            for p in state.presets.values()
        )
        return f"<tptz:GetPresetsResponse>{items}</tptz:GetPresetsResponse>", None
    if op == "GotoPreset":
        token = _check_profile(req, profile_token)
        preset_token = req.text("tptz:PresetToken")
        preset = state.presets.get(preset_token or "")
        if preset is None:
            raise SoapFault("Sender", "NoToken", f"unknown preset token {preset_token!r}")
        state.move_to(preset.pan, preset.tilt, preset.zoom)
        return "<tptz:GotoPresetResponse/>", AcceptedMove(token, preset.token, preset.pan, preset.tilt, preset.zoom)
    if op == "AbsoluteMove":
        token = _check_profile(req, profile_token)
        (cur_pan, cur_tilt, cur_zoom), _ = state.position()
        pt = req.find("tptz:Position/tt:PanTilt")
        zm = req.find("tptz:Position/tt:Zoom")
        if pt is None and zm is None:
            raise SoapFault("Sender", "InvalidArgVal", "AbsoluteMove without a Position")
        space = (pt.get("space") if pt is not None else None) or state.default_pan_tilt_space
        if space == PT_DEGREES_SPACE:
            pan_deg, tilt_deg = _float_attr(pt, "x", -180.0, 180.0), _float_attr(pt, "y", -90.0, 90.0)
            pan = None if pan_deg is None else pan_deg / 180.0
            tilt = None if tilt_deg is None else tilt_deg / 90.0
        elif space == PT_SPACE:
            pan = _float_attr(pt, "x", -1.0, 1.0)
            tilt = _float_attr(pt, "y", -1.0, 1.0)
        else:
            raise SoapFault("Sender", "SpaceNotSupported", f"pan/tilt space {space!r} not supported")
        zoom = _float_attr(zm, "x", 0.0, 1.0)
        state.move_to(cur_pan if pan is None else pan, cur_tilt if tilt is None else tilt, cur_zoom if zoom is None else zoom)
        return "<tptz:AbsoluteMoveResponse/>", AcceptedMove(token, None, pan, tilt, zoom)
    if op == "Stop":
        token = _check_profile(req, profile_token)
        state.stop()
        return "<tptz:StopResponse/>", AcceptedMove(token, None, None, None, None)
    if op == "GetStatus":
        _check_profile(req, profile_token)
        (pan, tilt, zoom), moving = state.position()
        status = "MOVING" if moving else "IDLE"
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return (
            f"<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>{_vector_xml(pan, tilt, zoom)}</tt:Position>"
            f"<tt:MoveStatus><tt:PanTilt>{status}</tt:PanTilt><tt:Zoom>{status}</tt:Zoom></tt:MoveStatus>"
            f"<tt:UtcTime>{now}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>",
            None,
        )
    raise SoapFault("Receiver", "ActionNotSupported", f"PTZ service does not implement {op}", http_status=500)
