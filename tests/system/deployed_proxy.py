"""The deployment's TLS proxy (``deploy/caddy/Caddyfile``) run as a real Caddy in front of real upstreams.

As for the brokers (``tests/system/deployed.py``), the file compose mounts is used as is
but for what only a container has: the listening ports (443/80 need root and are
shared), the admin endpoint (2019 is shared; the test needs none) and the upstreams'
compose host names. ``skip_install_trust`` keeps Caddy's internal CA out of the
machine's trust store (the tests may run as root); clients trust :attr:`root_ca` instead.

:class:`PeerRelay` stands in for the compose network: there the api sees the proxy at
the proxy container's own address, here Caddy and the api would both be 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sonopolis.embedded import ServiceError, free_port, terminate, wait_port
from tests.system.deployed import DEPLOY, caddy_binary

CADDYFILE = DEPLOY / "caddy" / "Caddyfile"


def render_caddyfile(upstreams: dict[str, str], http_port: int, https_port: int) -> str:
    """The deployed Caddyfile with ports, admin endpoint and the named upstreams (``api:8080`` -> address) rewritten."""
    text = CADDYFILE.read_text(encoding="utf-8")
    admin = "\tadmin 127.0.0.1:2019\n"
    if admin not in text:
        raise ServiceError(f"{CADDYFILE}: no {admin.strip()!r} line to rewrite for a local run")
    text = text.replace(admin, f"\tadmin off\n\thttp_port {http_port}\n\thttps_port {https_port}\n\tskip_install_trust\n")
    for name, address in upstreams.items():
        if f"reverse_proxy {name}\n" not in text:
            raise ServiceError(f"{CADDYFILE}: no 'reverse_proxy {name}' to point at {address}")
        text = text.replace(f"reverse_proxy {name}\n", f"reverse_proxy {address}\n")
    return text


class PeerRelay:
    """Relays TCP connections to ``target``, connecting from ``source_ip`` (another loopback address).

    Linux routes all of 127.0.0.0/8 to ``lo`` but picks 127.0.0.1 as the source of a
    loopback connection; binding the onward socket gives the upstream a distinct peer.
    """

    def __init__(self, target: tuple[str, int], source_ip: str) -> None:
        self.target = target
        self.source_ip = source_ip
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name=f"relay->{target}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5, source_address=(self.source_ip, 0))
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@contextmanager
def deployed_proxy(work_dir: Path, upstreams: dict[str, str], public_host: str = "localhost") -> Iterator["DeployedProxy"]:
    """Caddy from the deployed Caddyfile, TLS from its internal CA; stopped on exit."""
    proxy = DeployedProxy(work_dir, upstreams, public_host)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


class DeployedProxy:
    """One Caddy process; :attr:`https_url` is the public origin, :attr:`root_ca` the CA to trust."""

    def __init__(self, work_dir: Path, upstreams: dict[str, str], public_host: str) -> None:
        self.work_dir = work_dir
        self.upstreams = upstreams
        self.public_host = public_host
        self.http_port = free_port()
        self.https_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def https_url(self) -> str:
        return f"https://{self.public_host}:{self.https_port}"

    @property
    def root_ca(self) -> Path:
        return self.work_dir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def start(self, timeout: float = 30) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        conf = self.work_dir / "Caddyfile"
        conf.write_text(render_caddyfile(self.upstreams, self.http_port, self.https_port), encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.work_dir), "XDG_DATA_HOME": str(self.work_dir / "data"),
               "XDG_CONFIG_HOME": str(self.work_dir / "config"),
               "SONOPOLIS_PUBLIC_HOST": self.public_host, "SONOPOLIS_TLS_ISSUER": "internal"}
        with open(self.work_dir / "caddy.log", "ab") as log:
            self._proc = subprocess.Popen([caddy_binary(), "run", "--config", str(conf), "--adapter", "caddyfile"],
                                          env=env, stdout=log, stderr=log)
        try:
            wait_port("127.0.0.1", self.https_port, timeout, "Caddy (deploy/caddy/Caddyfile)")
            deadline = time.monotonic() + timeout
            while not self.root_ca.exists():  # the internal CA is made at start, the site certificate next
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise ServiceError(f"Caddy made no internal CA at {self.root_ca}")
                time.sleep(0.05)
        except ServiceError as exc:
            self.stop()
            raise ServiceError(f"{exc}: {self.log_text()[-3000:]}") from None

    def stop(self) -> None:
        terminate(self._proc)
        self._proc = None

    def log_text(self) -> str:
        log = self.work_dir / "caddy.log"
        return log.read_text(errors="replace") if log.exists() else ""
