"""Crash durability (docs/security.md#goal-7, scaled to CI time): the real server, on a SQLite file
and on PostgreSQL, takes concurrent patient creations; it is SIGKILLed right after an acknowledgement at a
random point, restarted, and killed again, a few times. Every acknowledged write must be there, nothing that
was never sent may appear, every created patient has exactly one audit entry, and the chain verifies.

Marked `slow` but not deselected anywhere: it runs in the default suite and in CI."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from telecare.audit import service as audit
from telecare.audit.models import AuditEntry
from telecare.audit.sealer import seal_pending
from telecare.config import Settings
from telecare.core.db import Database
from telecare.identity.models import Patient, Role
from tests.factories import bearer, make_org, make_user, token_for
from tests.subprocesses import Server, start_server

ROUNDS = 3
WRITERS = 4


async def _hammer(server: Server, token: str, tag: str, kill_after: int, sent: set[str]) -> dict[str, int]:
    """Concurrent writers create patients until `kill_after` acknowledgements, then SIGKILL the server at
    once (other writers' requests are in flight). Returns the acknowledged MRN -> id."""
    acked: dict[str, int] = {}
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=WRITERS)
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=bearer(token), timeout=20, limits=limits
    ) as c:

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                mrn = f"{tag}-{w}-{i}"
                i += 1
                sent.add(mrn)
                body = {
                    "mrn": mrn,
                    "given_name": "Crash",
                    "family_name": f"Test{w}",
                    "birth_date": "1970-01-01",
                }
                try:
                    r = await c.post("/api/v1/patients", json=body | {"sex": "other", "state": "PA"})
                except httpx.TransportError:
                    return  # the server died with this request in flight: not acknowledged
                assert r.status_code == 201, r.text
                assert r.json()["mrn"] == mrn
                acked[mrn] = r.json()["id"]
                if len(acked) >= kill_after and not stop.is_set():
                    stop.set()
                    server.kill()  # right after the acknowledgement, before anything else runs

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    assert server.process.returncode == -9
    return acked


@pytest.mark.slow
async def test_acknowledged_writes_survive_sigkill_of_the_server(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    org = await make_org(db)
    coord = await make_user(db, org, Role.COORDINATOR)
    token = await token_for(db, coord, ["user/Patient.crs"])
    acked: dict[str, int] = {}
    sent: set[str] = set()
    for round_no in range(ROUNDS):
        server = start_server(settings, cwd=tmp_path)
        try:
            acked |= await _hammer(server, token, f"R{round_no}", rng.randint(5, 60), sent)
        finally:
            if server.process.poll() is None:
                server.kill()
        await _check(db, acked, sent, f"seed {seed}, after round {round_no}")

    # The restarted server serves what was acknowledged before the kills.
    server = start_server(settings, cwd=tmp_path)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=bearer(token), timeout=20) as c:
            for mrn in rng.sample(sorted(acked), 5):
                r = await c.get(f"/api/v1/patients/{acked[mrn]}")
                assert r.status_code == 200
                assert r.json()["mrn"] == mrn
    finally:
        server.kill()


async def _check(db: Database, acked: dict[str, int], sent: set[str], where: str) -> None:
    async with db.unit_of_work() as s:
        stored = {p.mrn: p.id for p in (await s.execute(select(Patient))).scalars()}
        created = [
            int(rid)
            for rid in (
                await s.execute(
                    select(AuditEntry.resource_id).where(
                        AuditEntry.resource_type == "Patient", AuditEntry.action == "create"
                    )
                )
            ).scalars()
            if rid is not None
        ]
        # Killed between entries' commit and their seal: checked (their own MACs) but not yet sealed.
        result = await audit.verify_chain(s, key=db.settings.secret("audit_hmac_key").encode())
    # The next sealer run (here: this process's; in production the restarted server's) seals them.
    await seal_pending(db)
    async with db.unit_of_work() as s:
        sealed = await audit.verify_chain(s, key=db.settings.secret("audit_hmac_key").encode())
    assert sealed.ok, f"{where}: {sealed.reason}"
    assert sealed.unsealed == 0, where
    lost = {mrn for mrn, pid in acked.items() if stored.get(mrn) != pid}
    assert not lost, f"{where}: {len(lost)} acknowledged writes lost"
    phantoms = set(stored) - sent
    assert not phantoms, f"{where}: rows nobody sent: {sorted(phantoms)[:5]}"
    # Data and audit commit together: exactly one create entry per stored patient, none for lost ones.
    assert sorted(created) == sorted(stored.values()), where
    assert result.ok, f"{where}: {result.reason}"
