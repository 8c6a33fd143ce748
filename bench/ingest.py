"""Ingestion benchmark: readings/s end to end over HTTP (native batches of 1,000, rules evaluated), readings/s
for single-reading posts, and p50/p99 from commit of an alerting reading to the alert reaching a connected
nurse dashboard (WebSocket). Prints the ceiling from the same run: the same rows written straight into the
same table with `executemany` (SQLite) or `COPY` (PostgreSQL), no HTTP, no rules; and for single-reading
posts, the same number of rows each inserted and committed in its own transaction by 16 concurrent tasks on
Telecare's engine (the naive one-fsync-per-reading ceiling that group commit is meant to beat).

    .venv/bin/python bench/ingest.py                      # SQLite, and PostgreSQL via pgserver if installed
    .venv/bin/python bench/ingest.py --postgres-url postgresql://user:pw@host/db_admin_db
    .venv/bin/python bench/ingest.py --only sqlite --batches 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from telecare.config import Mode, Settings  # noqa: E402
from telecare.core import migrate  # noqa: E402
from telecare.core.db import Database  # noqa: E402
from telecare.domains import install as install_domains  # noqa: E402
from telecare.identity.models import Role  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, data_dir: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.workers = workers
        self.env = {
            **os.environ,
            "TELECARE_DATABASE_URL": url,
            "TELECARE_DATA_DIR": str(data_dir),
            "TELECARE_BASE_URL": f"http://127.0.0.1:{self.port}",
            "TELECARE_RPM_DEVICE_REQUESTS_PER_MINUTE": "100000000",
            "TELECARE_RPM_BACKGROUND_INTERVAL_SECONDS": "0",
            "TELECARE_LOG_LEVEL": "WARNING",
            "TELECARE_SESSION_SECRET": "bench-session-secret-" + "x" * 32,
            "TELECARE_AUDIT_HMAC_KEY": "bench-audit-key-" + "y" * 32,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Server:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "telecare.asgi:app",
            "--port",
            str(self.port),
            "--no-access-log",
        ]
        cmd += ["--log-level", "warning", "--workers", str(self.workers)]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=tempfile.gettempdir())  # noqa: ASYNC220
        async with httpx.AsyncClient() as c:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    if (await c.get(f"http://127.0.0.1:{self.port}/healthz")).status_code == 200:
                        return self
                await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)


def settings_for(url: str, data_dir: Path) -> Settings:
    return Settings(
        mode=Mode.TEST,
        database_url=url,
        data_dir=data_dir,
        session_secret="bench-session-secret-" + "x" * 32,  # type: ignore[arg-type]
        audit_hmac_key="bench-audit-key-" + "y" * 32,  # type: ignore[arg-type]
        _env_file=None,
    )  # type: ignore[call-arg]


async def setup(db: Database, patients: int) -> dict[str, Any]:
    from tests.factories import (
        add_to_care_team,
        make_device,
        make_device_key,
        make_org,
        make_patient,
        make_user,
    )

    org = await make_org(db)
    physician = await make_user(db, org, Role.PHYSICIAN)
    nurse = await make_user(db, org, Role.NURSE)
    serials, ids, pids = [], [], []
    for _ in range(patients):
        pid = await make_patient(db, org)
        assert isinstance(pid, int)
        for prac in (physician.practitioner_id, nurse.practitioner_id):
            assert prac is not None
            await add_to_care_team(db, patient_id=pid, practitioner_id=prac, org_id=org)
        device_id, serial = await make_device(db, org, patient_id=pid)
        serials.append(serial)
        ids.append(device_id)
        pids.append(pid)
    key = await make_device_key(db, org, ids)
    return {"org": org, "nurse": nurse, "key": key, "serials": serials, "patients": pids}


def reading(serial: str, t: datetime, sys_: int = 122) -> dict[str, Any]:
    return {
        "device": serial,
        "measured_at": t.isoformat(),
        "kind": "blood_pressure",
        "systolic": sys_,
        "diastolic": 78,
        "unit": "mm[Hg]",
    }


async def batches_rate(base: str, key: str, serials: list[str], batches: int, size: int) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    start_t = datetime.now(UTC) - timedelta(days=30)
    payloads = []
    for b in range(batches):
        items = []
        for i in range(size):
            n = b * size + i
            items.append(reading(serials[n % len(serials)], start_t + timedelta(seconds=n), 115 + n % 40))
        payloads.append(json.dumps(items).encode())
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            r = await client.post(
                f"{base}/api/v1/monitoring/readings",
                content=body,
                headers={**headers, "content-type": "application/json"},
            )
            if r.status_code != 200 or r.json()["created"] != size:
                raise RuntimeError(r.text[:300])

    async with httpx.AsyncClient(timeout=120) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(2)))
        elapsed = time.perf_counter() - t0
    return batches * size / elapsed


async def singles_rate(base: str, key: str, serials: list[str], count: int, concurrency: int = 16) -> float:
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    start_t = datetime.now(UTC) - timedelta(days=60)
    bodies = [
        json.dumps([reading(serials[n % len(serials)], start_t + timedelta(seconds=n))]).encode()
        for n in range(count)
    ]
    it = iter(bodies)

    async def worker(client: httpx.AsyncClient) -> None:
        for body in it:
            r = await client.post(f"{base}/api/v1/monitoring/readings", content=body, headers=headers)
            assert r.status_code == 200, r.text[:300]

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return count / elapsed


WRK_SINGLES = """
-- One single-reading device post per request, each a new measurement: a thread number (setup) and a
-- counter make every measured_at unique, so nothing is a replay the server would deduplicate.
local serials = {%(serials)s}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function request()
  n = n + 1
  local ms = %(base_ms)d + tid * 100000000 + n * 1000
  local when = os.date("!%%Y-%%m-%%dT%%H:%%M:%%S", math.floor(ms / 1000)) .. "+00:00"
  local body = string.format(
    '[{"device":"%%s","measured_at":"%%s","kind":"blood_pressure","systolic":122,"diastolic":78,'
    .. '"unit":"mm[Hg]"}]', serials[(n %% #serials) + 1], when)
  return wrk.format("POST", "/api/v1/monitoring/readings", nil, body)
end
"""


@contextlib.contextmanager
def profiling(output: Path | None, pid: int, seconds: float) -> Iterator[None]:
    """py-spy (pip install py-spy) sampling the server while the block runs (as in bench/reads.py)."""
    if output is None:
        yield
        return
    import shutil

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(output)]
    argv += ["--duration", str(int(seconds) + 1), "--rate", "200", "--nonblocking"]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.wait(timeout=seconds + 30)


def singles_wrk(
    base: str, key: str, serials: list[str], tmp: Path, duration: float
) -> tuple[float, int, float]:
    """Single-reading posts driven by wrk (-t2 -c16): (posts/s, non-2xx count, p99 ms). A Python client tops
    out near 300 requests/s on this machine, below what the server may do."""
    import shutil

    wrk = shutil.which("wrk")
    if wrk is None:
        return float("nan"), 0, float("nan")
    base_ms = int((datetime.now(UTC) - timedelta(days=80)).timestamp() * 1000)
    script = tmp / "singles.lua"
    script.write_text(
        WRK_SINGLES % {"serials": ", ".join(json.dumps(s) for s in serials), "base_ms": base_ms}
    )
    argv = [wrk, "-t2", "-c16", f"-d{duration:g}s", "--latency", "-s", str(script)]
    argv += ["-H", f"Authorization: Bearer {key}", "-H", "content-type: application/json", base]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(_grab(r"Requests/sec:\s+([\d.]+)", out))
    bad = int(_grab(r"Non-2xx or 3xx responses:\s+(\d+)", out, "0"))
    p99 = _grab(r"99%\s+([\d.]+)(us|ms|s)\b", out, "nan", unit=True)
    return rps, bad, p99


async def count_readings(url: str, tmp: Path) -> int:
    from sqlalchemy import func, select

    from telecare.monitoring.models import Reading

    db = Database(settings_for(url, tmp))
    try:
        async with db.unit_of_work(read_only=True) as uow:
            return int((await uow.execute(select(func.count()).select_from(Reading))).scalar_one())
    finally:
        await db.dispose()


def _grab(pattern: str, text: str, default: str | None = None, *, unit: bool = False) -> Any:
    import re

    m = re.search(pattern, text)
    if m is None:
        if default is None:
            raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
        return float(default) if unit else default
    if not unit:
        return m.group(1)
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


async def alert_latency(base: str, ctx: dict[str, Any], rounds: int) -> list[float]:
    """Milliseconds from commit of an alerting reading to the alert frame on a logged-in nurse's socket."""
    import websockets
    from tests.factories import web_login

    async with httpx.AsyncClient(base_url=base) as client:
        await web_login(client, ctx["nurse"])
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    headers = {"Authorization": f"Bearer {ctx['key']}"}
    latencies: list[float] = []
    ws_url = base.replace("http", "ws") + "/ws/monitoring/alerts"
    async with websockets.connect(ws_url, additional_headers={"Cookie": cookie}) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(rounds):
                serial = ctx["serials"][i % len(ctx["serials"])]
                now = datetime.now(UTC)
                r = await client.post(
                    f"{base}/api/v1/monitoring/readings", json=[reading(serial, now, 195)], headers=headers
                )
                assert r.status_code == 200
                opened = r.json()["alerts_opened"]
                if not opened:
                    continue
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if msg.get("type") == "alert" and msg["change"] == "opened":
                        latencies.append((time.time() - msg["committed_at"]) * 1000)
                        break
                if i % len(ctx["serials"]) == len(ctx["serials"]) - 1:
                    break  # every patient has an open alert now (dedupe would swallow the rest)
    return latencies


def ceiling_rows(org: int, patients: list[int], n: int) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for i in range(n):
        t = now - timedelta(days=90, seconds=-i)
        rows.append(
            (
                org,
                patients[i % len(patients)],
                None,
                "native",
                "blood_pressure",
                "85354-9",
                120.0,
                80.0,
                "mm[Hg]",
                120.0,
                80.0,
                "mm[Hg]",
                t,
                -300,
                t,
                None,
                uuid.uuid4().hex + uuid.uuid4().hex,
            )
        )
    return rows


COLS = (
    "org_id, patient_id, device_id, source, kind, code, value, value2, unit, orig_value, orig_value2, "
    "orig_unit, measured_at, utc_offset_minutes, received_at, device_reading_id, identity_hash"
)


def sqlite_ceiling(path: str, org: int, patients: list[int], n: int, batch: int = 1000) -> float:
    import sqlite3

    rows = ceiling_rows(org, patients, n)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # the app's setting
    sql = f"INSERT INTO readings ({COLS}) VALUES ({', '.join('?' * 17)})"
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[s : s + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return n / elapsed


def pg_ceiling(url: str, org: int, patients: list[int], n: int, batch: int = 10_000) -> float:
    import psycopg

    rows = ceiling_rows(org, patients, n)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            with conn.cursor() as cur, cur.copy(f"COPY readings ({COLS}) FROM STDIN") as copy:
                for row in rows[s : s + batch]:
                    copy.write_row(row)
            conn.commit()
        elapsed = time.perf_counter() - t0
    return n / elapsed


async def single_commit_ceiling(url: str, tmp: Path, org: int, patients: list[int], n: int) -> float:
    """Rows/s with one committed transaction per row, 16 concurrent tasks, Telecare's engine and pragmas."""
    from sqlalchemy import text

    db = Database(settings_for(url, tmp))
    names = [c.strip() for c in COLS.split(",")]
    sql = text(f"INSERT INTO readings ({COLS}) VALUES ({', '.join(':' + c for c in names)})")
    rows = iter(ceiling_rows(org, patients, n))

    async def worker() -> None:
        for row in rows:
            async with db.engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite, as in a unit of work
                await conn.execute(sql, dict(zip(names, row, strict=True)))

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(16)))
        return n / (time.perf_counter() - t0)
    finally:
        await db.dispose()


async def run_backend(name: str, url: str, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    migrate.upgrade(url)
    install_domains()
    db = Database(settings_for(url, tmp))
    ctx = await setup(db, args.patients)
    await db.dispose()
    out: dict[str, float] = {}
    workers = 1 if name == "sqlite" else args.pg_workers
    async with Server(url, tmp, workers) as server:
        base = f"http://127.0.0.1:{server.port}"
        batches_profile = args.profile and args.profile.with_name(args.profile.name + ".batches")
        with profiling(batches_profile, server.proc.pid if server.proc else 0, args.batches * 0.25):
            out["batch_readings_per_s"] = await batches_rate(
                base, ctx["key"], ctx["serials"], args.batches, 1000
            )
        out["single_posts_per_s"] = await singles_rate(base, ctx["key"], ctx["serials"], args.singles)
        before = await count_readings(url, tmp)
        with profiling(args.profile, server.proc.pid if server.proc else 0, args.wrk_duration):
            wrk_rps, wrk_bad, wrk_p99 = singles_wrk(base, ctx["key"], ctx["serials"], tmp, args.wrk_duration)
        out["single_posts_wrk_stored"] = await count_readings(url, tmp) - before
        out["single_posts_wrk_per_s"], out["single_posts_wrk_errors"] = wrk_rps, wrk_bad
        out["single_posts_wrk_p99_ms"] = wrk_p99
        lat = await alert_latency(base, ctx, args.patients)
    lat.sort()
    out["alert_p50_ms"] = statistics.median(lat)
    out["alert_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    out["alerts_measured"] = len(lat)
    n = args.batches * 1000
    if name == "sqlite":
        out["ceiling_rows_per_s"] = sqlite_ceiling(url.split(":///", 1)[1], ctx["org"], ctx["patients"], n)
    else:
        out["ceiling_rows_per_s"] = pg_ceiling(url, ctx["org"], ctx["patients"], n)
    out["fraction_of_ceiling"] = out["batch_readings_per_s"] / out["ceiling_rows_per_s"]
    out["single_ceiling_per_s"] = await single_commit_ceiling(
        url, tmp, ctx["org"], ctx["patients"], min(args.singles, 2000)
    )
    return out


def report(name: str, r: dict[str, float]) -> None:
    print(f"\n== {name} ==")
    print(f"native batches of 1,000 over HTTP (rules on): {r['batch_readings_per_s']:>10,.0f} readings/s")
    print(f"single-reading posts over HTTP:               {r['single_posts_per_s']:>10,.0f} readings/s")
    print(
        f"commit -> dashboard alert latency:            p50 {r['alert_p50_ms']:.1f} ms, "
        f"p99 {r['alert_p99_ms']:.1f} ms ({int(r['alerts_measured'])} alerts)"
    )
    ceiling_kind = "executemany, 1,000 rows/txn" if name == "sqlite" else "COPY, 10,000 rows/txn"
    print(f"ceiling ({ceiling_kind}, no HTTP, no rules): {r['ceiling_rows_per_s']:>10,.0f} rows/s")
    print(f"end-to-end batches as a fraction of the ceiling: {r['fraction_of_ceiling']:.0%}")
    single_ratio = r["single_posts_per_s"] / r["single_ceiling_per_s"]
    print(
        f"single posts: ceiling (1 row per committed transaction, 16 concurrent, same engine): "
        f"{r['single_ceiling_per_s']:,.0f} rows/s; ratio {single_ratio:.2f}"
    )
    print(
        f"single-reading posts driven by wrk (-t2 -c16):  {r['single_posts_wrk_per_s']:>10,.0f} posts/s, "
        f"p99 {r['single_posts_wrk_p99_ms']:.0f} ms, {int(r['single_posts_wrk_errors'])} non-2xx, "
        f"{int(r['single_posts_wrk_stored']):,} readings stored (target >= 1,000/s; same-run ceiling above)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres-url", help="admin URL of a PostgreSQL server (a scratch database is created)"
    )
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--singles", type=int, default=3000)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--pg-workers", type=int, default=2, help="uvicorn workers on PostgreSQL")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy raw stacks of the server: the wrk single posts here, the batches in <file>.batches",
    )
    parser.add_argument("--wrk-duration", type=float, default=10.0, help="seconds of wrk single posts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print(
            f"machine: {os.cpu_count()} CPUs; server: uvicorn, 1 worker on SQLite, {args.pg_workers} on "
            "PostgreSQL; client on the same machine"
        )
        if args.only in (None, "sqlite"):
            report("sqlite", await run_backend("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db", tmp, args))
        if args.only in (None, "postgresql"):
            admin = args.postgres_url
            server = None
            if admin is None:
                try:
                    import pgserver
                except ImportError:
                    print("\n(PostgreSQL skipped: pass --postgres-url or install pgserver)")
                    return
                server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="stop")
                admin = server.get_uri()
            import psycopg

            name = f"telecare_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            from sqlalchemy.engine import make_url

            url = make_url(admin.replace("postgresql://", "postgresql+psycopg://", 1)).set(database=name)
            try:
                report(
                    "postgresql",
                    await run_backend("postgresql", url.render_as_string(hide_password=False), tmp, args),
                )
            finally:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                if server is not None:
                    server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
