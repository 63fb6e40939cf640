"""Fixtures of the bridge tests: one operator account (argon2 hashed once per session)."""

from __future__ import annotations

import pytest

from safecity_bridge.console.auth import hash_password
from safecity_bridge.settings import OperatorAccount

OPERATOR = ("camille", "correct horse battery")
SUPERVISOR = ("dominique", "staple battery horse")


@pytest.fixture(scope="session")
def operators() -> list[OperatorAccount]:
    return [
        OperatorAccount(name=OPERATOR[0], password_hash=hash_password(OPERATOR[1]), role="operator"),
        OperatorAccount(name=SUPERVISOR[0], password_hash=hash_password(SUPERVISOR[1]), role="supervisor"),
    ]
