"""One warm ONVIF session per camera, on the real client library (onvif-zeep-async).

Why a session object: building an ONVIF client parses WSDLs and discovers service
addresses (GetServices, GetProfiles, GetPresets) — tens to hundreds of milliseconds.
The bridge does it once at start-up (or on reconnect) and keeps the PTZ service proxy,
the PTZ profile token and the camera's preset tokens, so steering is one SOAP call of a
few milliseconds.

The library is imported lazily: importing ``onvif`` configures root logging and
patches zeep, side effects this package does not want at its own import time.
Requests are typed (``create_type('GotoPreset')``, ``create_type('AbsoluteMove')``).
:func:`describe_failure` turns the library's exceptions into a short reason and whether
a retry could help; it is the one place that knows those exception types.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from safecity_bridge.cameras.config import CameraConfig

if TYPE_CHECKING:
    from onvif import ONVIFCamera, ONVIFService

log = logging.getLogger(__name__)

GENERIC_PAN_TILT_SPACE = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
GENERIC_ZOOM_SPACE = "http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"


class CameraError(Exception):
    """The camera answered, but cannot be used as configured (e.g. no PTZ profile)."""


@dataclass
class CameraSession:
    camera_id: str
    client: ONVIFCamera
    ptz: ONVIFService
    profile_token: str
    preset_tokens: frozenset[str]
    missing_presets: tuple[str, ...] = field(default=())  # configured but not stored on the camera

    async def goto_preset(self, token: str) -> None:
        req = self.ptz.create_type("GotoPreset")
        req.ProfileToken = self.profile_token
        req.PresetToken = token
        await self.ptz.GotoPreset(req)

    async def absolute_move(self, pan: float, tilt: float, zoom: float) -> None:
        """Generic-space position, naming the spaces: a position without them is read in the
        camera's configured default space, which may be degrees (pan 0.45 = half a degree)."""
        req = self.ptz.create_type("AbsoluteMove")
        req.ProfileToken = self.profile_token
        req.Position = {"PanTilt": {"x": pan, "y": tilt, "space": GENERIC_PAN_TILT_SPACE}, "Zoom": {"x": zoom, "space": GENERIC_ZOOM_SPACE}}
        await self.ptz.AbsoluteMove(req)

    async def get_status(self) -> dict[str, Any]:
        req = self.ptz.create_type("GetStatus")
        req.ProfileToken = self.profile_token
        status = await self.ptz.GetStatus(req)
        pos, move = status.Position, status.MoveStatus
        return {
            "pan": float(pos.PanTilt.x) if pos is not None and pos.PanTilt is not None else None,
            "tilt": float(pos.PanTilt.y) if pos is not None and pos.PanTilt is not None else None,
            "zoom": float(pos.Zoom.x) if pos is not None and pos.Zoom is not None else None,
            "moving": bool(move is not None and "MOVING" in (str(move.PanTilt), str(move.Zoom))),
        }

    async def close(self) -> None:
        await self.client.close()


def wsdl_dir() -> Path:
    import onvif

    return Path(onvif.__file__).parent / "wsdl"


async def warm_wsdls() -> None:
    """Parse the device, media and PTZ WSDLs once (the library caches them per process)."""
    from onvif import ONVIFService
    from onvif.definition import SERVICES

    for name in ("devicemgmt", "media", "ptz"):
        svc = ONVIFService("http://127.0.0.1:9/onvif/unused", None, None, str(wsdl_dir() / SERVICES[name]["wsdl"]), no_cache=True, binding_name="{%s}%s" % (SERVICES[name]["ns"], SERVICES[name]["binding"]))
        try:
            await svc.setup()
        finally:
            await svc.close()


async def open_session(camera: CameraConfig, password: SecretStr) -> CameraSession:
    """Connect, discover services, find the PTZ profile and the stored presets."""
    from onvif import ONVIFCamera

    client = ONVIFCamera(camera.host, camera.port, camera.username, password.get_secret_value(), no_cache=True, adjust_time=camera.adjust_time)
    try:
        await client.update_xaddrs()
        media = await client.create_media_service()
        ptz = await client.create_ptz_service()
        profiles = await media.GetProfiles()
        token = camera.profile_token
        if token is None:
            token = next((p.token for p in profiles or [] if getattr(p, "PTZConfiguration", None) is not None), None)
            if token is None:
                raise CameraError("no media profile with a PTZ configuration")
        elif token not in {p.token for p in profiles or []}:
            raise CameraError(f"configured profile_token {token!r} not offered by the camera")
        req = ptz.create_type("GetPresets")
        req.ProfileToken = token
        stored = frozenset(p.token for p in (await ptz.GetPresets(req)) or [])
        missing = tuple(p.token for p in camera.presets if p.token not in stored)
        if missing:
            log.warning("camera %s: %d configured preset(s) not stored on the camera: %s", camera.id, len(missing), ", ".join(missing))
        return CameraSession(camera.id, client, ptz, token, stored, missing)
    except BaseException:
        await client.close()
        raise


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a camera call may legitimately raise (anything else is a bug)."""
    import aiohttp
    import zeep.exceptions
    from onvif.exceptions import ONVIFError

    return (TimeoutError, OSError, aiohttp.ClientError, zeep.exceptions.Error, ONVIFError, CameraError)


def describe_failure(exc: BaseException, timeout_s: float | None = None) -> tuple[str, bool]:
    """(short reason for the operator/journal, worth retrying?)."""
    import aiohttp
    import zeep.exceptions
    from onvif.exceptions import ONVIFAuthError, ONVIFError

    if isinstance(exc, TimeoutError):
        return (f"timeout after {timeout_s * 1000:.0f} ms" if timeout_s else "timeout"), True
    if isinstance(exc, zeep.exceptions.Fault):
        subcodes = [getattr(s, "localname", str(s)) for s in (exc.subcodes or [])]
        if "NotAuthorized" in subcodes or "not authorized" in (exc.message or "").lower():
            return "authentication refused by the camera (ter:NotAuthorized): check user name/password", False
        return f"camera fault {'/'.join(subcodes) or exc.code}: {exc.message}", False
    if isinstance(exc, ONVIFAuthError):
        return f"authentication refused by the camera: {exc}", False
    if isinstance(exc, ONVIFError):
        cause = exc.__cause__
        if cause is not None and cause is not exc:
            return describe_failure(cause, timeout_s)
        return f"ONVIF client error: {exc}", True
    if isinstance(exc, zeep.exceptions.TransportError):
        return f"HTTP error {exc.status_code} from the camera", exc.status_code >= 500
    if isinstance(exc, zeep.exceptions.Error):
        return f"protocol error: {exc}", False
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return f"connection failed: {type(exc).__name__}: {exc}", True
    if isinstance(exc, CameraError):
        return str(exc), False
    return f"{type(exc).__name__}: {exc}", False
