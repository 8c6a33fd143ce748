"""Booking under contention: many patients race for the same practitioner's slots.

Prints how many bookings succeeded (must equal the number of distinct free slots raced for), how many were
refused as taken, the latency percentiles of one booking attempt, and the latency of a one-week slot search.
The same-run ceiling: as many concurrent attempts on as many distinct slots, each a bare transaction on the
same engine (check the slot is free, insert a row, commit; no rules, no audit), attempts/s beside it.

    .venv/bin/python bench/booking.py                      # a fresh SQLite file
    .venv/bin/python bench/booking.py --postgres           # a throwaway pgserver instance
    TELECARE_DATABASE_URL=postgresql://... .venv/bin/python bench/booking.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from tests.factories import make_patient
from tests.visit_factories import NOW, WED_9AM_NY, make_clinic, principal_of

from telecare.config import Mode, Settings
from telecare.core import migrate
from telecare.core.db import Database
from telecare.core.time import freeze_clock
from telecare.domains import install as install_domains
from telecare.scheduling import availability, service
from telecare.scheduling.models import Modality
from telecare.scheduling.service import SlotUnavailable


def _url(args: argparse.Namespace, tmp: str) -> tuple[str, object | None]:
    if os.environ.get("TELECARE_DATABASE_URL"):
        return os.environ["TELECARE_DATABASE_URL"], None
    if args.postgres:
        import pgserver

        server = pgserver.get_server(tmp, cleanup_mode="stop")
        return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1), server
    return f"sqlite+aiosqlite:///{tmp}/bench.db", None


async def bare_ceiling(db: Database, patients: int, slots: int) -> tuple[float, list[float], int]:
    """Attempts/s, attempt latencies (ms) and bookings of the bare race: same engine, no Telecare code."""
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE bench_slots (slot INTEGER PRIMARY KEY, patient_id INTEGER)"))
    latencies: list[float] = []
    booked = 0

    async def attempt(patient: int, slot: int) -> None:
        nonlocal booked
        t0 = time.perf_counter()
        try:
            async with db.engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite, as in a unit of work
                taken = await conn.scalar(text("SELECT 1 FROM bench_slots WHERE slot = :s"), {"s": slot})
                if taken is None:
                    await conn.execute(
                        text("INSERT INTO bench_slots VALUES (:s, :p)"), {"s": slot, "p": patient}
                    )
                    booked += 1
        except IntegrityError:  # PostgreSQL: two transactions saw the slot free, one insert lost
            pass
        latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(attempt(p, p % slots) for p in range(patients)))
    return patients / (time.perf_counter() - t0), latencies, booked


async def run(url: str, patients: int, slots: int) -> None:
    settings = Settings(mode=Mode.TEST, database_url=url, _env_file=None)  # type: ignore[call-arg]
    migrate.upgrade(settings.database_url)
    install_domains()
    db = Database(settings)
    clinic = await make_clinic(db)
    pids = []
    for _ in range(patients):
        pid = await make_patient(db, clinic.org_id)
        assert isinstance(pid, int)
        pids.append(pid)
    freeze_clock(NOW)
    coordinator = principal_of(clinic.coordinator)
    starts = [WED_9AM_NY + timedelta(minutes=30 * (i % slots)) for i in range(patients)]
    latencies: list[float] = []
    outcomes: list[str] = []

    async def attempt(pid: int, start: datetime) -> None:
        t0 = time.perf_counter()
        try:
            async with db.unit_of_work() as s:
                await service.book_appointment(
                    s,
                    coordinator,
                    practitioner_id=clinic.doctor.practitioner_id or 0,
                    visit_type_id=clinic.visit_type_id,
                    start_at=start,
                    modality=Modality.VIDEO,
                    expected_state="PA",
                    patient_id=pid,
                )
            outcomes.append("booked")
        except SlotUnavailable:
            outcomes.append("taken")
        latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(attempt(p, s) for p, s in zip(pids, starts, strict=True)))
    wall = time.perf_counter() - t0
    search = []
    for _ in range(20):
        t1 = time.perf_counter()
        async with db.unit_of_work() as s:
            await availability.find_slots(
                s,
                principal_of(clinic.patient),
                visit_type_id=clinic.visit_type_id,
                state="PA",
                first_day=date(2026, 12, 2),
                days=7,
            )
        search.append((time.perf_counter() - t1) * 1000)
    ceiling, bare_latencies, bare_booked = await bare_ceiling(db, patients, slots)
    await db.dispose()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    bq = statistics.quantiles(bare_latencies, n=100, method="inclusive")
    print(f"database: {url.split(':')[0]}")
    print(f"{patients} concurrent attempts on {slots} distinct slots in {wall:.2f} s")
    print(f"booked {outcomes.count('booked')} (expected {slots}), refused as taken {outcomes.count('taken')}")
    print(f"attempt latency ms: p50 {q[49]:.1f}  p99 {q[98]:.1f}  max {max(latencies):.1f}")
    print(f"one-week slot search (1 practitioner, 30-min visits) ms: median {statistics.median(search):.1f}")
    rate = patients / wall
    print(
        f"booking attempts/s {rate:.1f}; ceiling (bare check + insert + commit, same engine) "
        f"{ceiling:.1f}/s (p50 {bq[49]:.1f} ms, p99 {bq[98]:.1f} ms, booked {bare_booked}); "
        f"ratio {rate / ceiling:.2f}"
    )
    if outcomes.count("booked") != slots:
        raise SystemExit("DOUBLE BOOKING OR LOST BOOKING")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--slots", type=int, default=6)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, server = _url(args, tmp)
        try:
            asyncio.run(run(url, args.patients, args.slots))
        finally:
            if server is not None:
                server.cleanup()  # type: ignore[attr-defined]


if __name__ == "__main__":
    freeze_clock(datetime.now(UTC))
    main()
