"""Fixtures of the bridge tests: operator accounts (argon2 hashed once per session), a running
bridge on a fresh database and a private broker, its live feed, and an edge-side publisher."""

from __future__ import annotations

import pytest

from safecity_bridge.console.auth import hash_password
from safecity_bridge.runner import BridgeThread, NoCameras
from safecity_bridge.settings import OperatorAccount
from tests.safecity_bridge.bridge_harness import FeedReader, Publisher, make_settings

OPERATOR = ("camille", "correct horse battery")
SUPERVISOR = ("dominique", "staple battery horse")


@pytest.fixture(scope="session")
def operators() -> list[OperatorAccount]:
    return [
        OperatorAccount(name=OPERATOR[0], password_hash=hash_password(OPERATOR[1]), role="operator"),
        OperatorAccount(name=SUPERVISOR[0], password_hash=hash_password(SUPERVISOR[1]), role="supervisor"),
    ]


@pytest.fixture
def bridge(db, mqtt_broker, operators):  # noqa: ANN001, ANN201
    with BridgeThread(make_settings(db.safe, mqtt_broker.port, operators=operators), NoCameras) as bt:
        yield bt


@pytest.fixture
def feed(bridge):  # noqa: ANN001, ANN201
    reader = FeedReader(f"http://127.0.0.1:{bridge.settings.http_port}/feed", OPERATOR).start()
    yield reader
    reader.stop()


@pytest.fixture
def pub(mqtt_broker):  # noqa: ANN001, ANN201
    p = Publisher(mqtt_broker.port)
    yield p
    p.close()
