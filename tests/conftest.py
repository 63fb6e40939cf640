"""Fixtures shared by every test package: real PostgreSQL and Mosquitto, never mocks."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonopolis.bootstrap import RoleDsns
from sonopolis.embedded import LocalMosquitto
from tests import services

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """Superuser DSN of the machine's PostgreSQL (fails the run loudly when unreachable)."""
    return services.require_admin()


@pytest.fixture
def db(pg_admin_dsn: str) -> Iterator[RoleDsns]:
    """A fresh database per test with the smart and safe roles/schemas; DSNs of both roles."""
    with services.fresh_database(pg_admin_dsn) as dsns:
        yield dsns


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A private Mosquitto (anonymous, persistent) for this test only."""
    with services.private_mosquitto(tmp_path) as broker:
        yield broker


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` or a skip with the reason when the data is not on this checkout."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not present at {SHARED}: data-dependent check skipped")
    return SHARED


@pytest.fixture
def pg_tmp() -> Iterator[Path]:
    """A work directory for a private PostgreSQL cluster, outside pytest's basetemp.

    PostgreSQL runs as an unprivileged user when the tests run as root; pytest resets
    its ``/tmp/pytest-of-<user>`` root to mode 0700 whenever another pytest run starts
    (several run in parallel on this machine), which would cut the server off from its
    data directory mid-test.
    """
    path = Path(tempfile.mkdtemp(prefix="sonopolis-ingest-pg-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
