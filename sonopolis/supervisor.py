"""Run each Sonopolis service as its own OS process, with its own environment.

The demo, the system tests and ``bench/faults.py`` start the real services exactly as
an operator would (``sonopolis ingest``, ``sonopolis bridge``, ...), each with only
its side's environment variables: a smart process never receives a
``SONOPOLIS_SAFE_*`` variable and the reverse. Start order and stop order are written
down in one place (the caller's list); stop is the reverse of start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sonopolis.embedded import ServiceError, wait_port

_SIDE_PREFIXES = ("SONOPOLIS_SMART_", "SONOPOLIS_SAFE_", "SONOPOLIS_EDGE_")


def side_env(allowed_prefix: str | None, extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment minus every side's variables, plus ``extra``.

    ``allowed_prefix`` keeps that one side's inherited variables (e.g. an operator's
    ``SONOPOLIS_SMART_DB__DSN``); the other sides' never pass.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SIDE_PREFIXES) or (allowed_prefix and k.startswith(allowed_prefix))}
    env.update(extra)
    for key in extra:
        if allowed_prefix and key.startswith(_SIDE_PREFIXES) and not key.startswith(allowed_prefix):
            raise ValueError(f"{key} given to a {allowed_prefix}* process")
    return env


@dataclass
class ManagedProcess:
    """One ``sonopolis <command>`` process with its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    ready_port: int | None = None
    stdin_pipe: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @classmethod
    def sonopolis(cls, name: str, args: Iterable[str], env: dict[str, str], log_dir: Path, **kw: object) -> "ManagedProcess":
        return cls(name, [sys.executable, "-m", "sonopolis.cli", *args], env, log_dir, **kw)  # type: ignore[arg-type]

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self, timeout: float = 60) -> "ManagedProcess":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if self.stdin_pipe else subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        if self.ready_port:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise ServiceError(f"{self.name} exited with {self.proc.returncode} at start; log:\n{self.tail()}")
                try:
                    wait_port("127.0.0.1", self.ready_port, 0.5, self.name)
                    break
                except ServiceError:
                    if time.monotonic() > deadline:
                        raise ServiceError(f"{self.name} did not listen on {self.ready_port}; log:\n{self.tail()}") from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        if not self.proc:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as in a crash: proves that state lives in the brokers and the database."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""


class Supervisor:
    """Processes started in order, stopped in reverse order."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def start(self, process: ManagedProcess, timeout: float = 60) -> ManagedProcess:
        # Listed before it starts: an interrupt (Ctrl-C) or a "did not listen" timeout while
        # it comes up must still stop it (it was listed only once ready, and outlived the demo).
        self.processes.append(process)
        process.start(timeout)
        return process

    def check(self) -> None:
        dead = [p for p in self.processes if not p.alive() and not p.stdin_pipe]
        if dead:
            p = dead[0]
            raise ServiceError(f"{p.name} stopped unexpectedly (exit {p.proc.returncode if p.proc else '?'}); log:\n{p.tail()}")

    def stop_all(self) -> None:
        for p in reversed(self.processes):
            p.stop()
        self.processes.clear()
