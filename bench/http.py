"""HTTP benchmark: login latency (password + TOTP), authenticated read latency and requests/s.

Starts the real server (`python -m telecare serve`, one uvicorn worker) as a subprocess on a loopback port
against a temporary SQLite file loaded with the demo organization (or PostgreSQL: `--database-url URL`, or
`--pgserver` for a throwaway local server), then drives it with httpx. The load generator shares the machine
with the server, so the figures are pessimistic; compare runs made on the same machine.

    make bench                                   # SQLite
    .venv/bin/python bench/http.py --pgserver    # PostgreSQL
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is bench/http.py: drop its folder from sys.path so `import http.client` is the stdlib one.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "src"))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import httpx  # noqa: E402
import pyotp  # noqa: E402
from sqlalchemy import select  # noqa: E402

from telecare.auth import service as auth_service  # noqa: E402
from telecare.auth import sessions  # noqa: E402
from telecare.auth.principal import system_principal  # noqa: E402
from telecare.config import Mode, Settings  # noqa: E402
from telecare.core import migrate  # noqa: E402
from telecare.core.db import Database  # noqa: E402
from telecare.core.time import utc_now  # noqa: E402
from telecare.domains import install as install_domains  # noqa: E402
from telecare.identity import demo, service  # noqa: E402
from telecare.identity.models import CareTeamMember, Organization, Practitioner, Role, User  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def summary(name: str, samples: list[float]) -> str:
    return (
        f"{name:<34} n={len(samples):<5} p50 {ms(percentile(samples, 50))}  p99 {ms(percentile(samples, 99))}"
        f"  mean {ms(statistics.fmean(samples))}"
    )


@contextlib.contextmanager
def throwaway_pgserver() -> Iterator[str]:
    import pgserver

    with tempfile.TemporaryDirectory(prefix="telecare-bench-pg-") as datadir:
        server = pgserver.get_server(datadir, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


async def prepare(settings: Settings, logins: int) -> tuple[list[tuple[str, str, str]], str, int]:
    """Demo data, `logins` enrolled staff users (email, password, TOTP secret), a clinician token and one of
    that clinician's patients."""
    install_domains()
    db = Database(settings)
    password = "bench password " + secrets.token_hex(4)
    users: list[tuple[str, str, str]] = []
    try:
        async with db.unit_of_work() as s:
            await demo.load(s, settings)
        async with db.unit_of_work() as s:
            org = (
                await s.execute(select(Organization).where(Organization.slug == demo.DEMO_SLUG))
            ).scalar_one()
            run = secrets.token_hex(3)
            for i in range(logins):
                user = await service.create_user(
                    s,
                    system_principal(org.id),
                    email=f"bench{run}-{i}@{demo.DEMO_DOMAIN}",
                    role=Role.NURSE,
                    display_name=f"Bench {i}",
                    password=password,
                )
                user.totp_enrolled_at = utc_now()  # a returning user: the flow is the TOTP challenge
                secret = sessions.totp_secret(settings, user)
                assert secret is not None
                users.append((user.email, password, secret))
            doctor = (
                await s.execute(select(User).where(User.email == f"dr.rivera@{demo.DEMO_DOMAIN}"))
            ).scalar_one()
            practitioner = (
                await s.execute(select(Practitioner).where(Practitioner.user_id == doctor.id))
            ).scalar_one()
            patient_id = (
                await s.execute(
                    select(CareTeamMember.patient_id)
                    .where(CareTeamMember.practitioner_id == practitioner.id)
                    .order_by(CareTeamMember.patient_id)
                    .limit(1)
                )
            ).scalar_one()
            _, token = await auth_service.issue_token(
                s, system_principal(doctor.org_id), user_id=doctor.id, scopes=["user/Patient.rs"],
                name="bench", expires_in_days=1,
            )  # fmt: skip
    finally:
        await db.dispose()
    return users, token, patient_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "telecare", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {(workdir / 'server.log').read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        time.sleep(0.05)
    process.kill()
    raise SystemExit("server did not start")


async def bench_logins(
    base: str, users: list[tuple[str, str, str]]
) -> tuple[list[float], list[float], list[float]]:
    password_step: list[float] = []
    totp_step: list[float] = []
    total: list[float] = []
    for email, password, secret in users:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await client.get("/login")  # the form sets the login CSRF cookie
            token = client.cookies["tc_login_csrf"]
            t0 = time.perf_counter()
            r = await client.post("/login", data={"email": email, "password": password, "csrf_token": token})
            t1 = time.perf_counter()
            assert (r.status_code, r.headers.get("location")) == (303, "/login/totp"), r.text
            page = await client.get("/login/totp")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert csrf, page.text
            t2 = time.perf_counter()
            r = await client.post(
                "/login/totp", data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf.group(1)}
            )
            t3 = time.perf_counter()
            assert (r.status_code, r.headers.get("location")) == (303, "/home"), r.text
            password_step.append(t1 - t0)
            totp_step.append(t3 - t2)
            total.append(t3 - t0)
    return password_step, totp_step, total


async def bench_reads(base: str, token: str, patient_id: int, count: int) -> list[float]:
    samples: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        for i in range(count + 50):
            t0 = time.perf_counter()
            r = await client.get(f"/api/v1/patients/{patient_id}")
            elapsed = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            assert r.json()["id"] == patient_id
            if i >= 50:  # warm-up excluded
                samples.append(elapsed)
    return samples


async def bench_throughput(
    base: str, token: str, patient_id: int, concurrency: int, duration: float, max_requests: int
) -> tuple[int, int, float, list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    done = 0
    deadline = time.perf_counter() + duration
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors, done
            while time.perf_counter() < deadline and done < max_requests:
                done += 1
                t0 = time.perf_counter()
                try:
                    r = await client.get(f"/api/v1/patients/{patient_id}")
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done, errors, elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="PostgreSQL URL (default: a temporary SQLite file)")
    parser.add_argument("--pgserver", action="store_true", help="run against a throwaway local PostgreSQL")
    parser.add_argument("--logins", type=int, default=20, help="password + TOTP logins to time")
    parser.add_argument("--reads", type=int, default=500, help="sequential authenticated reads to time")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients for requests/s")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of concurrent load (upper bound)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=20_000, help="request cap for the concurrent phase"
    )
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="telecare-bench-")))
        url = args.database_url
        if args.pgserver:
            url = stack.enter_context(throwaway_pgserver())
        url = url or f"sqlite:///{workdir / 'bench.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")}
        env.update(
            PYTHONPATH=str(ROOT / "src"),
            TELECARE_MODE="development",
            TELECARE_DATABASE_URL=url,
            TELECARE_SESSION_SECRET=secrets.token_urlsafe(48),
            TELECARE_AUDIT_HMAC_KEY=secrets.token_urlsafe(48),
            TELECARE_DATA_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode(),
            # Every bench client signs in from 127.0.0.1: lift the per-IP login limit for this run only.
            TELECARE_LOGIN_RATE_PER_IP_PER_MINUTE="100000",
            TELECARE_LOG_LEVEL="WARNING",
        )
        settings = Settings(
            mode=Mode.DEVELOPMENT,
            database_url=url,
            session_secret=env["TELECARE_SESSION_SECRET"],  # type: ignore[arg-type]
            audit_hmac_key=env["TELECARE_AUDIT_HMAC_KEY"],  # type: ignore[arg-type]
            data_key=env["TELECARE_DATA_KEY"],  # type: ignore[arg-type]
            _env_file=None,  # type: ignore[call-arg]
        )
        migrate.upgrade(settings.database_url)
        users, token, patient_id = asyncio.run(prepare(settings, args.logins))
        process, base = start_server(env, workdir)
        try:
            backend = "PostgreSQL" if settings.is_postgres else "SQLite (WAL, synchronous=FULL)"
            print(f"Telecare HTTP bench: {backend}, 1 uvicorn worker, {os.cpu_count()} CPUs, loopback")
            password_step, totp_step, total = asyncio.run(bench_logins(base, users))
            print(summary("login: password step (argon2id)", password_step))
            print(summary("login: TOTP step", totp_step))
            print(summary("login: password + TOTP (total)", total))
            reads = asyncio.run(bench_reads(base, token, patient_id, args.reads))
            print(summary("GET /api/v1/patients/{id} (seq.)", reads))
            done, errors, elapsed, latencies = asyncio.run(
                bench_throughput(base, token, patient_id, args.concurrency, args.duration, args.max_requests)
            )
            print(summary(f"GET under {args.concurrency} concurrent clients", latencies))
            print(
                f"{'throughput':<34} {done / elapsed:7.1f} req/s  ({done} requests in {elapsed:.1f} s, "
                f"{errors} errors)"
            )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
