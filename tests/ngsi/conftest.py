"""Fixtures of the NGSI-LD tests: anyio on asyncio, sample rows following docs/CONTRACTS.md."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
