"""The demo chooses every service's port before starting it: no two may get the same one."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

from sonopolis import embedded


def test_a_port_the_kernel_offers_twice_is_handed_out_once(monkeypatch) -> None:  # noqa: ANN001
    """Nothing is bound between choosing and starting, so the kernel may offer a chosen port
    again (the demo's NGSI-LD broker once got the safe broker's port and could not start)."""
    offered = iter([41001, 41001, 41002])

    class Kernel:
        """socket.socket whose bind to port 0 gets the next offered port."""

        def __init__(self, *args: Any) -> None:
            self.port = 0

        def __enter__(self) -> "Kernel":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(offered)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(embedded, "_HANDED_OUT", set())
    monkeypatch.setattr(embedded, "socket", SimpleNamespace(socket=Kernel))  # this module's view only
    assert [embedded.free_port(), embedded.free_port()] == [41001, 41002]


def test_free_ports_are_real_and_distinct() -> None:
    ports = [embedded.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free, as promised
