"""Kill test (docs/security.md#kill-test): a client posts 10,000 readings with retries while the server is
SIGKILLed at random moments and restarted. Afterwards every acknowledged reading is stored exactly once,
nothing unsent exists, and the audit chain verifies. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

from telecare.audit.service import verify_chain
from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.monitoring.models import Reading
from tests.monitoring.conftest import build_clinic
from tests.monitoring.live import LiveServer

TOTAL = 10_000
BATCH = 250
KILLS = 4


async def test_sigkill_during_ingestion_loses_nothing_and_duplicates_nothing(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    clinic = await build_clinic(db)
    serials = list(clinic.serials.values())[:1]
    start = utc_now().replace(microsecond=0)
    sent = {}
    batches = []
    for b in range(TOTAL // BATCH):
        items = []
        for i in range(BATCH):
            n = b * BATCH + i
            rid = f"k{n}"
            sent[rid] = n
            t = start.timestamp() - TOTAL + n
            items.append(
                {
                    "device": serials[0],
                    "reading_id": rid,
                    "measured_at": utc_now().fromtimestamp(t, utc_now().tzinfo).isoformat(),
                    "kind": "blood_pressure",
                    "systolic": 110 + n % 30,
                    "diastolic": 70,
                    "unit": "mm[Hg]",
                }
            )
        batches.append(items)
    server = LiveServer(settings, tmp_path)
    server.start()
    rng = random.Random(1234)
    acknowledged: set[str] = set()
    done = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        while kills < KILLS and not done.is_set():
            time.sleep(rng.uniform(0.3, 1.2))
            if done.is_set():
                return
            server.kill()
            kills += 1
            server.start()

    thread = threading.Thread(target=killer)
    thread.start()
    headers = {"Authorization": f"Bearer {clinic.key}"}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            order = list(range(len(batches)))
            # also resend some acknowledged batches later: duplicates must stay single
            order += rng.sample(order, 8)
            for b in order:
                while True:
                    try:
                        r = await client.post(
                            f"{server.base}/api/v1/monitoring/readings", json=batches[b], headers=headers
                        )
                    except httpx.HTTPError:
                        await asyncio.sleep(0.05)
                        continue
                    if r.status_code == 200:
                        statuses = {item["status"] for item in r.json()["items"]}
                        assert statuses <= {"created", "duplicate"}
                        acknowledged.update(item["reading_id"] for item in batches[b])
                        break
                    assert r.status_code >= 500 or r.status_code == 429, r.text[:300]
                    await asyncio.sleep(0.05)
            # keep posting until the killer is through, so every kill lands during traffic
            while kills < KILLS:
                await asyncio.sleep(0.05)
    finally:
        done.set()
        thread.join(30)
        server.stop()
    assert kills == KILLS
    async with db.unit_of_work() as s:
        rows = (await s.execute(select(Reading.device_reading_id))).scalars().all()
        dupes = (
            await s.execute(
                select(Reading.identity_hash)
                .group_by(Reading.identity_hash)
                .having(func.count(Reading.id) > 1)
            )
        ).all()
        chain = await verify_chain(s, key=settings.secret("audit_hmac_key").encode(), seal_window=3600)
    stored = list(rows)
    assert dupes == []
    assert len(stored) == len(set(stored)), "a reading is stored twice"
    assert acknowledged <= set(stored), "an acknowledged reading is missing"
    assert set(stored) <= set(sent), "a reading that was never sent exists"
    assert len(stored) == TOTAL
    assert chain.ok, chain.reason
