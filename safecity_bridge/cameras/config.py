"""The camera registry: which PTZ cameras exist, where, and how to reach and aim them.

Safe-side configuration only (a ``cameras`` list in :class:`SafeSettings`). Each entry
says where the camera is (position, mounting height), what it can see (range and
bearing sector), how its pan/tilt/zoom axes map onto the world (calibration), which
presets point at which sensors or places, and how to log in. Secrets are never written
in the file: a password comes from an environment variable or a secret file, resolved
once at start-up by :func:`resolve_password` (no environment read at import time).

Every value is bounded and cross-checked, so a typo stops the bridge with the key path
and a message rather than steering a camera to the wrong street.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

STANDARD_DEVICE_PATH = "/onvif/device_service"


class CameraConfigError(ValueError):
    """A camera entry that cannot be used (e.g. its password source is missing)."""


class PanTiltCalibration(BaseModel):
    """How the camera's ONVIF generic pan/tilt/zoom space maps onto bearings and angles.

    Pan: ``pan = direction * angle_diff(bearing, pan_zero_bearing_deg) / (pan_range_deg / 2)``,
    so with ``pan_range_deg = 360`` the generic range -1..1 spans ±180° around the
    bearing at pan 0. Tilt: linear from ``tilt_min_deg`` (at -1) to ``tilt_max_deg``
    (at +1), angles above the horizon positive. Zoom: the horizontal field of view shrinks
    from ``hfov_wide_deg`` (zoom 0) to ``hfov_tele_deg`` (zoom 1), linear in the optical
    zoom factor, as most PTZ heads expose it.
    """

    model_config = ConfigDict(extra="forbid")

    calibrated: bool = Field(False, title="Calibrated", description="Only a surveyed camera may be aimed by AbsoluteMove; otherwise presets only")
    pan_zero_bearing_deg: float = Field(0.0, ge=0.0, lt=360.0, title="Bearing at pan 0", description="True bearing (degrees from north, clockwise) the camera faces at generic pan 0")
    pan_range_deg: float = Field(360.0, gt=0.0, le=360.0, title="Pan range", description="Degrees covered by generic pan -1..1")
    pan_direction: Literal[1, -1] = Field(1, title="Pan direction", description="+1 if increasing pan turns clockwise (seen from above), -1 otherwise")
    tilt_min_deg: float = Field(-90.0, ge=-90.0, le=90.0, title="Tilt at -1", description="Elevation angle at generic tilt -1 (negative = below the horizon)")
    tilt_max_deg: float = Field(0.0, ge=-90.0, le=90.0, title="Tilt at +1", description="Elevation angle at generic tilt +1")
    hfov_wide_deg: float = Field(60.0, gt=1.0, lt=180.0, title="Wide field of view", description="Horizontal field of view at zoom 0")
    hfov_tele_deg: float = Field(3.0, gt=0.1, lt=180.0, title="Tele field of view", description="Horizontal field of view at zoom 1")
    view_width_m: float = Field(30.0, ge=2.0, le=1000.0, title="Scene width", description="Width of scene to frame around a well-located source")

    @model_validator(mode="after")
    def _consistent(self) -> PanTiltCalibration:
        if math.isclose(self.tilt_min_deg, self.tilt_max_deg):
            raise ValueError("tilt_min_deg and tilt_max_deg must differ (they map generic tilt -1 and +1)")
        if self.hfov_tele_deg >= self.hfov_wide_deg:
            raise ValueError(f"hfov_tele_deg ({self.hfov_tele_deg}) must be narrower than hfov_wide_deg ({self.hfov_wide_deg})")
        return self


class PresetConfig(BaseModel):
    """A preset stored in the camera, and the ground point it looks at."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(..., min_length=1, max_length=64, title="ONVIF preset token")
    name: str = Field("", max_length=100)
    latitude: float = Field(..., ge=-90.0, le=90.0, description="Point the preset looks at")
    longitude: float = Field(..., ge=-180.0, le=180.0)
    sensor_id: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="The sensor this preset watches, if any")
    place: str | None = Field(None, max_length=100, description="Named place (square, crossroads) this preset watches")


class CameraConfig(BaseModel):
    """One ONVIF PTZ camera of the video-protection network."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", title="Camera id", description="Stable id used in the journal and the console")
    name: str = Field("", max_length=200)
    enabled: bool = Field(True, description="A disabled camera is never selected")
    host: str = Field(..., min_length=1, max_length=253, description="ONVIF device host name or IP")
    port: int = Field(80, ge=1, le=65535)
    path: Literal["/onvif/device_service"] = Field(STANDARD_DEVICE_PATH, description="Device service path (the ONVIF standard one; the client library fixes it)")
    username: str = Field(..., min_length=1, max_length=64)
    password: SecretStr | None = Field(None, description="Only for tests/demo; prefer password_env or password_file")
    password_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="Environment variable holding the password")
    password_file: Path | None = Field(None, description="File holding the password (e.g. /run/secrets/cam-12)")
    latitude: float = Field(..., ge=-90.0, le=90.0)
    longitude: float = Field(..., ge=-180.0, le=180.0)
    mounting_height_m: float = Field(6.0, ge=1.0, le=100.0, description="Height of the optical centre above the street")
    range_m: float = Field(250.0, gt=0.0, le=3000.0, description="Farthest distance at which the camera is useful")
    sector_min_bearing_deg: float = Field(0.0, ge=0.0, le=360.0, description="Sector of view, clockwise from this bearing...")
    sector_max_bearing_deg: float = Field(360.0, ge=0.0, le=360.0, description="...to this one (equal or 0..360 = full circle)")
    adjust_time: bool = Field(False, description="Compensate the camera's clock error (read by GetSystemDateAndTime) in WS-Security timestamps; for cameras without NTP")
    profile_token: str | None = Field(None, max_length=64, description="Media profile to use; default the first profile with a PTZ configuration")
    calibration: PanTiltCalibration = Field(default_factory=PanTiltCalibration)
    presets: list[PresetConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> CameraConfig:
        sources = [n for n, v in (("password", self.password), ("password_env", self.password_env), ("password_file", self.password_file)) if v is not None]
        if len(sources) != 1:
            raise ValueError(f"camera {self.id}: give exactly one of password, password_env, password_file (got {sources or 'none'})")
        tokens = [p.token for p in self.presets]
        if len(tokens) != len(set(tokens)):
            dup = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ValueError(f"camera {self.id}: duplicate preset token(s) {dup}")
        return self

    @property
    def full_circle(self) -> bool:
        return math.isclose(self.sector_min_bearing_deg % 360.0, self.sector_max_bearing_deg % 360.0)


class CameraRegistry(BaseModel):
    """All cameras, with ids checked unique."""

    cameras: list[CameraConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> CameraRegistry:
        ids = [c.id for c in self.cameras]
        if len(ids) != len(set(ids)):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate camera id(s) {dup}")
        return self

    def get(self, camera_id: str) -> CameraConfig:
        for c in self.cameras:
            if c.id == camera_id:
                return c
        raise KeyError(camera_id)


def resolve_password(camera: CameraConfig, environ: Mapping[str, str]) -> SecretStr:
    """The camera's password from its one configured source; called once at start-up.

    ``environ`` is passed in (usually ``os.environ``) so tests and the service decide
    where secrets come from. A trailing newline in a secret file is dropped.
    """
    if camera.password is not None:
        return camera.password
    if camera.password_env is not None:
        value = environ.get(camera.password_env)
        if not value:
            raise CameraConfigError(f"camera {camera.id}: environment variable {camera.password_env} is not set or empty")
        return SecretStr(value)
    assert camera.password_file is not None
    try:
        value = camera.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise CameraConfigError(f"camera {camera.id}: cannot read password_file {camera.password_file}: {exc.strerror}") from exc
    if not value:
        raise CameraConfigError(f"camera {camera.id}: password_file {camera.password_file} is empty")
    return SecretStr(value)
