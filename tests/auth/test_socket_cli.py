"""The operator disabling a user with `telecare users disable` (another process) closes that user's open
sockets within seconds: on PostgreSQL the command's event reaches every server worker through NOTIFY (the
timed re-check is pushed out to 300 s, so only the event can explain it); on SQLite, where events stay in
one process, the servers' timed re-check does it (here every second)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from telecare.config import Settings
from telecare.core.db import Database
from tests.auth.test_sockets import close_code, monitoring_ward
from tests.subprocesses import run_cli
from tests.visits.live.conftest import Live, login
from tests.visits.live.wsutil import expect, open_socket


@pytest.fixture
def recheck_seconds(backend: str) -> float:
    return 300.0 if backend == "postgresql" else 1.0


async def test_the_operator_disabling_a_user_from_the_cli_closes_their_sockets(
    db: Database, live: Live, settings: Settings, tmp_path: Path, app: Any
) -> None:
    _, nurse, _, _, _, _ = await monitoring_ward(db)
    ws = await open_socket(f"{live.ws}/ws/monitoring/alerts", f"tc_session={(await login(db, nurse)).cookie}")
    await expect(ws, "ready")
    r = await asyncio.to_thread(run_cli, settings, "users", "disable", "--email", nurse.email, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert await close_code(ws) == 4401
