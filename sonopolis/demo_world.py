"""The demo's little world: sensors, cameras, credentials, and a scripted incident.

Kept apart from the process orchestration (``sonopolis.demo``) so the system tests
and ``bench/faults.py`` can build the same world. It writes each side's own
configuration: the smart side gets a sensor file (public facts), the safe side a TOML
with the safe copy of the sensor positions, the simulated cameras and the operators.
Neither configuration mentions the other side.
"""

from __future__ import annotations

import csv
import json
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simulators.neighbourhood import SimSensor, sensors
from simulators.street_acoustics import PlacedSound, distance_m

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "train"

CAMERAS: tuple[tuple[str, str, float, float], ...] = (
    ("cam-jaures", "Place Jean-Jaurès, mât nord", 45.44090, 4.38700),
    ("cam-republique", "Rue de la République / Rue Gambetta", 45.43880, 4.38900),
    ("cam-michelet", "Rue Michelet", 45.43780, 4.38330),
    ("cam-liberation", "Avenue de la Libération", 45.43630, 4.39250),
)


@dataclass(frozen=True)
class Incident:
    """A scripted security sound: what, where, when (seconds into the live scene)."""

    label: str
    latitude: float
    longitude: float
    emission_s: float
    level_at_10m_db: float = 118.0


@dataclass
class World:
    sensors: list[SimSensor]
    edge_ids: list[str]
    incidents: list[Incident]
    camera_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    operator_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    smart_passwords: dict[str, str] = field(default_factory=dict)
    safe_passwords: dict[str, str] = field(default_factory=dict)

    def sensor(self, sensor_id: str) -> SimSensor:
        return next(s for s in self.sensors if s.sensor_id == sensor_id)


def build(n_sensors: int = 40, n_edge: int = 4) -> World:
    """The neighbourhood, with the live edge agents placed around the scripted incidents."""
    all_sensors = sensors(n_sensors)
    # Incidents on and beside Place Jean-Jaurès, where cameras can see them. The shop window is
    # 40-90 m from the agents: at 250 m (an earlier script) no agent could tell it from traffic.
    incidents = [
        Incident("gunshot", 45.44065, 4.38735, emission_s=12.0),
        Incident("glass_break", 45.44120, 4.38790, emission_s=26.0, level_at_10m_db=100.0),
    ]
    centre = incidents[0]
    ranked = sorted(all_sensors, key=lambda s: distance_m(s.latitude, s.longitude, centre.latitude, centre.longitude))
    edge_ids = [s.sensor_id for s in ranked[: max(0, min(n_edge, len(ranked)))]]
    world = World(all_sensors, edge_ids, incidents)
    for s in all_sensors:
        world.smart_passwords[s.sensor_id] = secrets.token_urlsafe(12)
        world.safe_passwords[s.sensor_id] = secrets.token_urlsafe(12)
    world.smart_passwords["svc.ingest"] = secrets.token_urlsafe(12)
    world.safe_passwords["svc.bridge"] = secrets.token_urlsafe(12)
    return world


def write_sensor_geojson(world: World, path: Path) -> Path:
    """The smart registry file: public facts about measuring instruments only."""
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [s.longitude, s.latitude]},
            "properties": {
                "sensor_id": s.sensor_id,
                "name": s.name,
                "street": s.place if "Place" not in s.place else None,
                "place": s.place if "Place" in s.place else None,
                "sonometer_class": s.sonometer_class,
                "installed_on": "2026-06-01",
                "calibration_offset_db": 0.0,
            },
        }
        for s in world.sensors
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False, indent=1))
    return path


def _bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi = math.radians((lat1 + lat2) / 2)
    dx = math.radians(lon2 - lon1) * math.cos(phi)
    dy = math.radians(lat2 - lat1)
    return (math.degrees(math.atan2(dx, dy)) + 360.0) % 360.0


def camera_presets(world: World, lat: float, lon: float, range_m: float) -> list[dict]:
    """One preset per sensor in range (the usual way cities set up their PTZ tours)."""
    out = []
    for i, s in enumerate(world.sensors):
        if distance_m(lat, lon, s.latitude, s.longitude) <= range_m:
            out.append({"token": f"p{i + 1}", "name": s.name, "latitude": s.latitude, "longitude": s.longitude, "sensor_id": s.sensor_id})
    return out


def safe_config(world: World, camera_ports: dict[str, int], operator_hash: str, http_port: int) -> str:
    """The bridge's own TOML: sensors' positions, cameras, operators (hash only)."""
    lines = ["# Safe-side configuration written by `sonopolis demo` (simulated cameras on loopback).", f"http_port = {http_port}", "retention_days = 15", ""]
    lines += ["[[operators]]", 'name = "demo-operator"', f'password_hash = "{operator_hash}"', 'role = "supervisor"', ""]
    for s in world.sensors:
        lines += ["[[sensors]]", f'sensor_id = "{s.sensor_id}"', f"latitude = {s.latitude}", f"longitude = {s.longitude}", ""]
    for cam_id, name, lat, lon in CAMERAS:
        if cam_id not in camera_ports:
            continue
        lines += [
            "[[cameras]]",
            f'id = "{cam_id}"',
            f'name = "{name}"',
            'host = "127.0.0.1"',
            f"port = {camera_ports[cam_id]}",
            'username = "admin"',
            'password_env = "SONOPOLIS_DEMO_CAMERA_PASSWORD"',
            f"latitude = {lat}",
            f"longitude = {lon}",
            "mounting_height_m = 8.0",
            "range_m = 300.0",
            "",
            "[cameras.calibration]",
            "calibrated = true",
            "pan_zero_bearing_deg = 0.0",
            "",
        ]
        for p in camera_presets(world, lat, lon, 300.0):
            lines += ["[[cameras.presets]]"] + [f"{k} = {json.dumps(v)}" for k, v in p.items()] + [""]
    return "\n".join(lines) + "\n"


def incident_waveforms(fs: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Event sounds held in memory: real labelled clips when ../shared is present, else synthesised.

    Only *reading* clips (licences in shared/audio/README.md); nothing is written.
    """
    out: dict[str, np.ndarray] = {}
    labels = SHARED_AUDIO / "LABELS.csv"
    if labels.exists():
        import soundfile as sf
        from scipy.signal import resample_poly

        with open(labels, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for label in ("gunshot", "glass_break"):
            picks = sorted((r for r in rows if r["label"] == label), key=lambda r: r["path"])
            if not picks:
                continue
            data, sr = sf.read(SHARED_AUDIO / picks[seed % len(picks)]["path"], dtype="float32", always_2d=False)
            if sr != fs:
                g = math.gcd(sr, fs)
                data = resample_poly(data, fs // g, sr // g).astype(np.float32)
            out[label] = data
    if len(out) < 2:
        from simulators.scene import SceneEvent, street_scene

        for label, kind in (("gunshot", "impulse"), ("glass_break", "glass")):
            if label not in out:
                out[label] = street_scene(1.0, fs, seed=seed, events=[SceneEvent(kind, 0.05, 0.9, 90.0)], background_db=0.0).audio
    return out


def placed_sounds(world: World, fs: int, seed: int = 0) -> list[PlacedSound]:
    waves = incident_waveforms(fs, seed)
    return [PlacedSound(i.label, waves[i.label], i.latitude, i.longitude, i.emission_s, i.level_at_10m_db) for i in world.incidents]
