"""An ONVIF PTZ camera that runs on a laptop: real SOAP 1.2 over HTTP, real WS-Security.

Why: video-protection cameras cannot run in CI, but the bridge must be tested through
the real client library (onvif-zeep-async) on the real protocol. This simulator answers
the calls that library and the bridge make, with the shapes the ONVIF WSDLs define:

- device service (``/onvif/device_service``): GetSystemDateAndTime (pre-auth),
  GetServices, GetCapabilities, GetDeviceInformation
- media (``/onvif/media_service``): GetProfiles
- PTZ (``/onvif/ptz_service``): GetNodes, GetConfigurations, GetPresets, GotoPreset,
  AbsoluteMove, Stop, GetStatus

Every operation except GetSystemDateAndTime requires a WS-Security UsernameToken with a
PasswordDigest; a wrong password, a stale ``Created`` or a replayed nonce gets a SOAP
fault ``env:Sender / ter:NotAuthorized``. Pan/tilt live in the ONVIF generic space
(-1..1), zoom in 0..1; a move takes time (``speed_per_s``) and GetStatus reports
MOVING then IDLE.

Every accepted PTZ motion command is recorded (:class:`PtzCommand`, with monotonic and
wall-clock timestamps) in ``commands`` and passed to ``on_command``. A camera can be
made dead: ``"hang"`` (accepts connections, never answers: a timeout for the client)
or ``"refuse"`` (port closed: connection refused), and revived.

In-process (tests, bench)::

    cam = SimulatedCamera(name="cam-1", users={"operator": "s3cret"}, presets=[...])
    with OnvifCameraSimulator(cam) as sim:   # background thread, 127.0.0.1, free port
        ... ONVIFCamera("127.0.0.1", sim.port, "operator", "s3cret") ...
        sim.wait_for_command(timeout=2)

As a process (demo)::

    python -m simulators.onvif_camera --port 8081 --user operator --password s3cret \
        --presets presets.json --command-log ptz.jsonl
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from aiohttp import web

from simulators.onvif_ptz import PT_SPACE, CameraState, Preset, ptz_operations
from simulators.onvif_soap import SOAP12_CONTENT_TYPE, DigestVerifier, SoapFault, envelope, parse_request, text

log = logging.getLogger(__name__)

DeadMode = Literal["hang", "refuse"]
PRE_AUTH_OPERATIONS = frozenset({"GetSystemDateAndTime"})


@dataclass(frozen=True)
class PtzCommand:
    """One accepted motion command, as the camera received it."""

    camera: str
    operation: str  # GotoPreset | AbsoluteMove | Stop
    profile_token: str
    preset_token: str | None
    pan: float | None
    tilt: float | None
    zoom: float | None
    user: str
    received_monotonic: float
    received_wall: float


@dataclass
class SimulatedCamera:
    """What the camera is: identity, accounts, presets, motion speed."""

    name: str = "sim-cam"
    users: dict[str, str] = field(default_factory=lambda: {"admin": "admin"})
    presets: list[Preset] = field(default_factory=list)
    profile_token: str = "profile_1"
    speed_per_s: float = 4.0  # generic-space units per second (a -1..1 swing takes 0.5 s)
    manufacturer: str = "Sonopolis"
    model: str = "Simulated PTZ"
    max_skew_s: float = 300.0
    clock_offset_s: float = 0.0  # the camera's clock error (real cameras drift without NTP)
    default_pan_tilt_space: str = PT_SPACE  # what an AbsoluteMove naming no space is read in (the PTZ configuration's default)
    command_delay_s: float = 0.0  # a slow head: GotoPreset/AbsoluteMove answer this late (real ones take 0.1-0.5 s)


class OnvifCameraSimulator:
    """Serves one :class:`SimulatedCamera` on ``host:port`` from a background thread."""

    def __init__(self, camera: SimulatedCamera, host: str = "127.0.0.1", port: int = 0, on_command: Callable[[PtzCommand], None] | None = None):
        self.camera = camera
        self.host = host
        self.port = port
        self.on_command = on_command
        self.state = CameraState(camera.presets, camera.speed_per_s, camera.default_pan_tilt_space)
        self.requests: Counter[str] = Counter()  # operation name -> count (incl. refused ones)
        self.auth_failures = 0
        self.dropped_while_hung = 0
        self._verifier = DigestVerifier(camera.users, camera.max_skew_s)
        self._commands: list[PtzCommand] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._alive: asyncio.Event | None = None
        self._dead: DeadMode | None = None

    # --- lifecycle (called from the test/bench thread) ------------------------------

    def start(self) -> OnvifCameraSimulator:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_server())
            except OSError as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"onvif-sim-{self.camera.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"ONVIF simulator {self.camera.name} did not start within 10 s")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop = self._loop
        if self._alive is not None:
            loop.call_soon_threadsafe(self._alive.set)  # release hung handlers
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> OnvifCameraSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def xaddr(self) -> str:
        return f"http://{self.host}:{self.port}/onvif/device_service"

    def set_dead(self, mode: DeadMode) -> None:
        """'hang': never answer (client times out); 'refuse': close the port."""
        self._call(self._set_dead(mode))

    def revive(self) -> None:
        self._call(self._revive())

    def _call(self, coro) -> None:  # type: ignore[no-untyped-def]
        if self._loop is None:
            raise RuntimeError("simulator not started")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # --- what the camera received ---------------------------------------------------

    @property
    def commands(self) -> list[PtzCommand]:
        with self._cond:
            return list(self._commands)

    def wait_for_command(self, timeout: float = 5.0, count: int = 1) -> PtzCommand:
        """Block until at least ``count`` commands were received; return the last one."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._commands) >= count, timeout):
                raise TimeoutError(f"{self.camera.name}: {len(self._commands)} PTZ command(s) after {timeout} s, expected {count}")
            return self._commands[-1]

    def clear(self) -> None:
        with self._cond:
            self._commands.clear()

    def _record(self, cmd: PtzCommand) -> None:
        with self._cond:
            self._commands.append(cmd)
            self._cond.notify_all()
        if self.on_command is not None:
            self.on_command(cmd)

    # --- server (runs in the simulator's loop) ---------------------------------------

    async def _start_server(self) -> None:
        self._alive = asyncio.Event()
        self._alive.set()
        app = web.Application(client_max_size=256 * 1024)
        for path in ("/onvif/device_service", "/onvif/media_service", "/onvif/ptz_service"):
            app.router.add_post(path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._open_site()

    async def _open_site(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        assert self._runner is not None
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def _set_dead(self, mode: DeadMode) -> None:
        self._dead = mode
        assert self._alive is not None
        if mode == "hang":
            self._alive.clear()
        elif self._site is not None:
            await self._site.stop()
            self._site = None
            # Established keep-alive connections would otherwise still be answered.
            if self._runner is not None and self._runner.server is not None:
                await self._runner.server.shutdown(0.1)

    async def _revive(self) -> None:
        assert self._alive is not None
        if self._dead == "refuse" and self._site is None:
            await self._open_site()
        self._dead = None
        self._alive.set()

    async def _handle(self, request: web.Request) -> web.Response:
        received_mono, received_wall = time.monotonic(), time.time()
        assert self._alive is not None
        if not self._alive.is_set():
            # A hung camera: the client's timeout fires first. What arrived while hung is
            # never executed, even after revival (the client has given up on it).
            await self._alive.wait()
            self.dropped_while_hung += 1
            return web.Response(status=503, text="camera was not responding")
        body = await request.read()
        try:
            req = parse_request(body)
            self.requests[req.operation] += 1
            user = ""
            if req.operation not in PRE_AUTH_OPERATIONS or req.username is not None:
                try:
                    user = self._verifier.verify(req, now=self._now())
                except SoapFault:
                    self.auth_failures += 1
                    raise
            if self.camera.command_delay_s and req.operation in ("GotoPreset", "AbsoluteMove"):
                await asyncio.sleep(self.camera.command_delay_s)
            result = self._dispatch(request.path, req.operation, req, user, received_mono, received_wall)
        except SoapFault as fault:
            log.info("%s: fault %s for a %s request", self.camera.name, fault.subcode, request.path)
            return web.Response(status=fault.http_status, body=fault.to_xml().encode(), content_type=None, headers={"Content-Type": SOAP12_CONTENT_TYPE})
        return web.Response(status=200, body=envelope(result).encode(), headers={"Content-Type": SOAP12_CONTENT_TYPE})

    def _dispatch(self, path: str, op: str, req, user: str, mono: float, wall: float) -> str:  # type: ignore[no-untyped-def]
        if path.endswith("device_service"):
            return self._device(op)
        if path.endswith("media_service") and op == "GetProfiles":
            return f"<trt:GetProfilesResponse>{self.state.profile_xml(self.camera.profile_token)}</trt:GetProfilesResponse>"
        if path.endswith("ptz_service"):
            xml, cmd = ptz_operations(self.state, self.camera.profile_token, op, req)
            if cmd is not None:
                self._record(PtzCommand(self.camera.name, op, cmd.profile_token, cmd.preset_token, cmd.pan, cmd.tilt, cmd.zoom, user, mono, wall))
            return xml
        raise SoapFault("Receiver", "ActionNotSupported", f"{op} is not supported on {path}", http_status=500)

    def _now(self) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=self.camera.clock_offset_s)

    def _device(self, op: str) -> str:
        base = f"http://{self.host}:{self.port}/onvif"
        if op == "GetSystemDateAndTime":
            now = self._now()
            return (
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
                "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
                "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
                f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute><tt:Second>{now.second}</tt:Second></tt:Time>"
                f"<tt:Date><tt:Year>{now.year}</tt:Year><tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date>"
                "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
            )
        if op == "GetServices":
            services = [("http://www.onvif.org/ver10/device/wsdl", "device_service"), ("http://www.onvif.org/ver10/media/wsdl", "media_service"), ("http://www.onvif.org/ver20/ptz/wsdl", "ptz_service")]
            items = "".join(
                f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{base}/{p}</tds:XAddr>"
                "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
                for ns, p in services
            )
            return f"<tds:GetServicesResponse>{items}</tds:GetServicesResponse>"
        if op == "GetCapabilities":
            return (
                "<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Device><tt:XAddr>{base}/device_service</tt:XAddr></tt:Device>"
                f"<tt:Media><tt:XAddr>{base}/media_service</tt:XAddr></tt:Media>"
                f"<tt:PTZ><tt:XAddr>{base}/ptz_service</tt:XAddr></tt:PTZ>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>"
            )
        if op == "GetDeviceInformation":
            return (
                f"<tds:GetDeviceInformationResponse><tds:Manufacturer>{text(self.camera.manufacturer)}</tds:Manufacturer>"
                f"<tds:Model>{text(self.camera.model)}</tds:Model><tds:FirmwareVersion>1.0</tds:FirmwareVersion>"
                f"<tds:SerialNumber>{text(self.camera.name)}</tds:SerialNumber><tds:HardwareId>sim</tds:HardwareId>"
                "</tds:GetDeviceInformationResponse>"
            )
        raise SoapFault("Receiver", "ActionNotSupported", f"device service does not implement {op}", http_status=500)


def command(*, port: int, name: str, user: str, password: str, presets: Path, command_log: Path) -> list[str]:
    """The argv that starts one simulated camera as its own process (what :func:`main` parses).

    Values go as ``--option=value``: a generated password may start with '-'
    (``secrets.token_urlsafe`` gives one about once in 64), which argparse would
    otherwise read as an option and refuse.
    """
    return [sys.executable, "-m", "simulators.onvif_camera", f"--port={port}", f"--name={name}", f"--user={user}",
            f"--password={password}", f"--presets={presets}", f"--command-log={command_log}"]


def main(argv: list[str] | None = None) -> None:
    """Run one simulated camera in the foreground until interrupted."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m simulators.onvif_camera", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--name", default="sim-cam")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="admin")
    p.add_argument("--presets", help="JSON file: [{token, name, pan, tilt, zoom}, ...]")
    p.add_argument("--command-log", help="append each PTZ command as a JSON line to this file")
    args = p.parse_args(argv)
    presets: list[Preset] = []
    if args.presets:
        with open(args.presets, encoding="utf-8") as fh:
            presets = [Preset(**item) for item in json.load(fh)]
    logfile = open(args.command_log, "a", encoding="utf-8") if args.command_log else None  # noqa: SIM115

    def write(cmd: PtzCommand) -> None:
        if logfile is not None:
            logfile.write(json.dumps(asdict(cmd)) + "\n")
            logfile.flush()

    sim = OnvifCameraSimulator(SimulatedCamera(name=args.name, users={args.user: args.password}, presets=presets), args.host, args.port, on_command=write)
    sim.start()
    print(f"onvif-camera {args.name} listening on {sim.xaddr}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        if logfile is not None:
            logfile.close()


if __name__ == "__main__":
    main()
