"""Fixtures of the ingestion tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
