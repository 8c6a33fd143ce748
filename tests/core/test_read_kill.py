"""Audited reads survive a SIGKILL (docs/audit.md#group-commit): the real server answers concurrent chart
reads, whose entries go through the group commit and then wait for the sealer; it is SIGKILLed right after
an acknowledgement, with other reads in flight and entries committed but not yet sealed. Every
acknowledged read must have its entry, no read has more entries than were sent, and once the next sealer
run has sealed what the dead server left, the chain verifies.

Marked `slow` but not deselected anywhere: it runs in the default suite and in CI."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from telecare.audit import service as audit
from telecare.audit.models import AuditEntry
from telecare.audit.sealer import seal_pending
from telecare.config import Settings
from telecare.core.db import Database
from telecare.identity.models import Role
from tests.factories import add_to_care_team, bearer, make_org, make_patient, make_user, token_for
from tests.subprocesses import start_server

READERS = 8
PATIENTS = 12


@pytest.mark.slow
async def test_every_acknowledged_read_keeps_its_entry_through_sigkill(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    org = await make_org(db)
    doctor = await make_user(db, org, Role.PHYSICIAN)
    assert doctor.practitioner_id
    patients = []
    for _ in range(PATIENTS):
        pid = await make_patient(db, org)
        assert isinstance(pid, int)
        await add_to_care_team(db, patient_id=pid, practitioner_id=doctor.practitioner_id, org_id=org)
        patients.append(pid)
    token = await token_for(db, doctor, ["user/Patient.rs"])
    sent: Counter[int] = Counter()
    acked: Counter[int] = Counter()
    rng = random.Random()
    kill_after = rng.randint(40, 200)
    # A long sealing interval: only the after-commit nudges seal, so the kill lands in the window.
    server = start_server(settings, cwd=tmp_path, extra_env={"TELECARE_AUDIT_SEAL_INTERVAL_SECONDS": "3600"})
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(
            base_url=server.base_url,
            headers=bearer(token),
            timeout=20,
            limits=httpx.Limits(max_connections=READERS),
        ) as client:

            async def reader() -> None:
                while not stop.is_set():
                    pid = rng.choice(patients)
                    sent[pid] += 1
                    try:
                        r = await client.get(f"/api/v1/patients/{pid}")
                    except httpx.TransportError:
                        return  # in flight when the server died: not acknowledged
                    assert r.status_code == 200, r.text
                    acked[pid] += 1
                    if sum(acked.values()) >= kill_after and not stop.is_set():
                        stop.set()
                        server.kill()

            await asyncio.gather(*(reader() for _ in range(READERS)))
    finally:
        if server.process.poll() is None:
            server.kill()
    assert server.process.returncode == -9
    key = settings.secret("audit_hmac_key").encode()
    async with db.unit_of_work() as s:
        rows = (
            await s.execute(
                select(AuditEntry.patient_id, func.count(AuditEntry.id))
                .where(
                    AuditEntry.actor_user_id == doctor.user_id,
                    AuditEntry.resource_type == "Patient",
                    AuditEntry.action == "read",
                )
                .group_by(AuditEntry.patient_id)
            )
        ).all()
        before = await audit.verify_chain(s, key=key)
    entries: dict[int, int] = {int(pid): int(n) for pid, n in rows if pid is not None}
    for pid in patients:
        assert acked[pid] <= entries.get(pid, 0) <= sent[pid], (pid, acked[pid], entries.get(pid), sent[pid])
    assert before.ok, before.reason  # unsealed entries younger than the window are checked by their own MAC
    await seal_pending(db)  # the next sealer run (in production: the restarted server's start-up run)
    async with db.unit_of_work() as s:
        after = await audit.verify_chain(s, key=key)
    assert after.ok, after.reason
    assert after.unsealed == 0
