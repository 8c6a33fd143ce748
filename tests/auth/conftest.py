"""Socket tests run against a real uvicorn server (tests/visits/live/conftest.py) with the timed re-check
pushed far out (300 s): a socket that closes within 5 s did so because of the revocation event. A test
parametrizes `recheck_seconds` to prove the timed re-check instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from telecare.config import Settings
from tests.conftest import make_settings
from tests.visits.live.conftest import live  # noqa: F401 - the live-server fixture


@pytest.fixture
def recheck_seconds() -> float:
    return 300.0


@pytest.fixture
def settings(database_url: str, tmp_path: Path, recheck_seconds: float) -> Settings:
    return make_settings(database_url, tmp_path / "data", socket_recheck_seconds=recheck_seconds)
