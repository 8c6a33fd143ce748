"""Read benchmark: authenticated `GET /api/v1/patients/{id}` under load, beside two same-run ceilings.

Sets up a temporary database the way an operator would (`telecare migrate`, `telecare demo`, a bearer token
from `telecare tokens create --user dr.rivera@... --scopes user/Patient.rs`), starts `telecare serve` on a
loopback port (1 uvicorn worker on SQLite; 2 with --postgres) and drives it with `wrk` (16 connections,
--duration seconds each; a Python client tops out near 300 req/s on this machine, wrk does not). In the same
run it serves `bench/bare_app.py`, a bare FastAPI + SQLAlchemy async app on the same kind of database (a copy
of the SQLite file, same pragmas; the same PostgreSQL database), with the same token and patient:

- bare read:            token lookup + patient row read, nothing written (the ceiling Telecare is held to);
- bare read + audit:    the same plus one audit-like row inserted and committed per request, the naive way.

Prints req/s, p50 and p99 (wrk --latency) for each and the ratio to the bare read. Before the load it also
times a few password + TOTP logins and sequential reads (httpx, one at a time). The load generator shares
the machine with the server, so the figures are pessimistic; compare runs made on the same machine.

    .venv/bin/python bench/reads.py                   # SQLite, 1 worker
    .venv/bin/python bench/reads.py --postgres        # a throwaway pgserver, 2 workers
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
import pyotp  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402

from telecare.auth import sessions  # noqa: E402
from telecare.auth.principal import system_principal  # noqa: E402
from telecare.config import Mode, Settings  # noqa: E402
from telecare.core.db import Database  # noqa: E402
from telecare.core.time import utc_now  # noqa: E402
from telecare.domains import install as install_domains  # noqa: E402
from telecare.identity import demo, service  # noqa: E402
from telecare.identity.models import Organization, Role  # noqa: E402

DOCTOR = f"dr.rivera@{demo.DEMO_DOMAIN}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def summary(name: str, samples: list[float]) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:7.1f} ms"

    return (
        f"{name:<44} n={len(samples):<5} p50 {ms(percentile(samples, 50))}  p99 {ms(percentile(samples, 99))}"
        f"  mean {ms(statistics.fmean(samples))}"
    )


@contextlib.contextmanager
def throwaway_pgserver(workdir: Path) -> Iterator[str]:
    import pgserver
    import psycopg
    from sqlalchemy.engine import make_url

    server = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
    try:
        admin = server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE telecare_bench")
        url = make_url(admin.replace("postgresql://", "postgresql+psycopg://", 1))
        yield url.set(database="telecare_bench").render_as_string(hide_password=False)
    finally:
        server.cleanup()


def telecare_cli(env: dict[str, str], workdir: Path, *argv: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "telecare", *argv], cwd=workdir, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"telecare {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def doctors_patient(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT ctm.patient_id FROM care_team_members ctm"
                        " JOIN practitioners p ON p.id = ctm.practitioner_id JOIN users u ON u.id = p.user_id"
                        " WHERE u.email = :email ORDER BY ctm.patient_id LIMIT 1"
                    ),
                    {"email": DOCTOR},
                ).scalar_one()
            )
    finally:
        engine.dispose()


async def login_users(settings: Settings, count: int) -> list[tuple[str, str, str]]:
    """`count` enrolled nurses of the demo organization: (email, password, TOTP secret)."""
    install_domains()
    db = Database(settings)
    password = "bench password " + secrets.token_hex(4)
    users: list[tuple[str, str, str]] = []
    try:
        async with db.unit_of_work() as s:
            org = (
                await s.execute(select(Organization).where(Organization.slug == demo.DEMO_SLUG))
            ).scalar_one()
            for i in range(count):
                user = await service.create_user(
                    s,
                    system_principal(org.id),
                    email=f"bench-{i}@{demo.DEMO_DOMAIN}",
                    role=Role.NURSE,
                    display_name=f"Bench {i}",
                    password=password,
                )
                user.totp_enrolled_at = utc_now()  # a returning user: the flow is the TOTP challenge
                secret = sessions.totp_secret(settings, user)
                assert secret is not None
                users.append((user.email, password, secret))
    finally:
        await db.dispose()
    return users


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(
    argv: list[str], env: dict[str, str], workdir: Path, name: str, port: int
) -> Iterator[tuple[str, int]]:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited: {log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not start")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/healthz", timeout=1).status_code in (200, 404):
                        break
                time.sleep(0.1)
            yield base, process.pid
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def profiling(output: Path | None, pid: int, seconds: float) -> Iterator[None]:
    """py-spy (pip install py-spy) sampling the server and its workers while the block runs."""
    if output is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--output", str(output)]
    argv += ["--duration", str(int(seconds) + 1), "--rate", "200", "--nonblocking"]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.wait(timeout=seconds + 30)


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


def sequential_reads(url: str, token: str, patient_id: int, count: int) -> list[float]:
    """`count` reads one after another (after 20 of warm-up); also checks the endpoint answers the patient."""
    samples: list[float] = []
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for i in range(count + 20):
            t0 = time.perf_counter()
            r = client.get(url)
            elapsed = time.perf_counter() - t0
            assert r.status_code == 200, (url, r.status_code, r.text[:500])
            assert r.json()["id"] == patient_id, r.text[:500]
            if i >= 20:
                samples.append(elapsed)
    return samples


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx responses + socket errors


UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(out: str) -> WrkResult:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        if m is None:
            raise ValueError(f"no {pct}% line in wrk output:\n{out}")
        return float(m.group(1)) * UNIT_MS[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    if rps is None or requests is None:
        raise ValueError(f"unexpected wrk output:\n{out}")
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return WrkResult(int(requests.group(1)), float(rps.group(1)), latency("50"), latency("99"), errors)


def wrk(url: str, token: str, args: argparse.Namespace) -> WrkResult:
    argv = [
        args.wrk,
        *("-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration:g}s"),
        *("--timeout", "30s", "--latency", "-H", f"Authorization: Bearer {token}", url),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if args.verbose:
        print(out)
    return parse_wrk(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", "--pgserver", action="store_true", help="a throwaway local PostgreSQL")
    parser.add_argument("--database-url", help="an empty PostgreSQL database instead")
    parser.add_argument("--workers", type=int, help="uvicorn workers (default 1 on SQLite, 2 on PostgreSQL)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of wrk load per endpoint")
    parser.add_argument("--connections", type=int, default=16, help="concurrent wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--logins", type=int, default=5, help="password + TOTP logins to time (0: none)")
    parser.add_argument("--reads", type=int, default=200, help="sequential reads to time per endpoint")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help="the wrk binary")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record Telecare's server with py-spy during its wrk load (collapsed stacks to this file)",
    )
    args = parser.parse_args()
    if not Path(args.wrk).exists():
        parser.error("wrk not found (Debian: apt-get install wrk)")
    if not 1 <= args.duration <= 60:
        parser.error("--duration between 1 and 60 seconds")

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="telecare-bench-reads-")))
        url = args.database_url
        if args.postgres and not url:
            url = stack.enter_context(throwaway_pgserver(workdir))
        postgres = url is not None and url.startswith("postgresql")
        url = url or f"sqlite:///{workdir / 'telecare.db'}"
        workers = args.workers or (2 if postgres else 1)
        if workers > 1 and not postgres:
            parser.error("several workers need PostgreSQL")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")}
        env.update(
            PYTHONPATH=str(ROOT / "src"),
            TELECARE_MODE="development",
            TELECARE_DATABASE_URL=url,
            TELECARE_DATA_DIR=str(workdir / "data"),
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
            data_dir=workdir / "data",
            session_secret=env["TELECARE_SESSION_SECRET"],  # type: ignore[arg-type]
            audit_hmac_key=env["TELECARE_AUDIT_HMAC_KEY"],  # type: ignore[arg-type]
            data_key=env["TELECARE_DATA_KEY"],  # type: ignore[arg-type]
            _env_file=None,  # type: ignore[call-arg]
        )
        telecare_cli(env, workdir, "migrate")
        telecare_cli(env, workdir, "demo")
        out = telecare_cli(env, workdir, "tokens", "create", "--user", DOCTOR, "--scopes", "user/Patient.rs")
        token = out.strip().splitlines()[-1]
        patient_id = doctors_patient(url)
        users = asyncio.run(login_users(settings, args.logins)) if args.logins else []

        if postgres:
            bare_url = url if "+psycopg" in url else url.replace("postgresql://", "postgresql+psycopg://", 1)
        else:  # a copy of the file just set up, so the bare app's writes never touch Telecare's
            bare_path = workdir / "bare.db"
            with sqlite3.connect(url.split(":///", 1)[1]) as src, sqlite3.connect(bare_path) as dst:
                src.backup(dst)
            bare_url = f"sqlite+aiosqlite:///{bare_path}"

        backend = f"PostgreSQL, {workers} workers" if postgres else "SQLite (WAL, synchronous=FULL), 1 worker"
        print(
            f"Read bench: {backend}; {os.cpu_count()} CPUs shared with the load generator"
            f" (wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s), loopback",
            flush=True,
        )
        path = f"/api/v1/patients/{patient_id}"
        results: dict[str, WrkResult] = {}
        bare_port = free_port()
        bare_argv = [
            sys.executable,
            *("-m", "uvicorn", "bare_app:app", "--app-dir", str(ROOT / "bench")),
            *("--host", "127.0.0.1", "--port", str(bare_port), "--workers", str(workers)),
            *("--no-access-log", "--log-level", "warning"),
        ]
        bare_env = {**env, "BENCH_DATABASE_URL": bare_url}
        port = free_port()
        telecare_argv = [
            sys.executable,
            *("-m", "telecare", "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(workers)),
        ]
        # The order puts Telecare between its two ceilings, so drift over the run shows.
        with serving(bare_argv, bare_env, workdir, "bare-read", bare_port) as (base, _):
            seq = sequential_reads(f"{base}/read/{patient_id}", token, patient_id, args.reads)
            print(summary("bare read (sequential)", seq), flush=True)
            results["bare read (token + row)"] = wrk(f"{base}/read/{patient_id}", token, args)
        with serving(telecare_argv, env, workdir, "telecare", port) as (base, pid):
            if users:
                password_step, totp_step, total = asyncio.run(bench_logins(base, users))
                print(summary("login: password step (argon2id)", password_step))
                print(summary("login: TOTP step", totp_step))
                print(summary("login: password + TOTP (total)", total))
            seq = sequential_reads(f"{base}{path}", token, patient_id, args.reads)
            print(summary(f"telecare GET {path} (sequential)", seq), flush=True)
            with profiling(args.profile, pid, args.duration):
                results[f"telecare GET {path}"] = wrk(f"{base}{path}", token, args)
        with serving(bare_argv, bare_env, workdir, "bare-audited", bare_port) as (base, _):
            seq = sequential_reads(f"{base}/audited/{patient_id}", token, patient_id, args.reads)
            print(summary("bare read + audit insert (seq.)", seq), flush=True)
            results["bare read + naive audit insert"] = wrk(f"{base}/audited/{patient_id}", token, args)

        ceiling = results["bare read (token + row)"].rps
        print(f"\n{args.connections} concurrent connections, {args.duration:g} s each (wrk --latency):")
        print(f"{'endpoint':<38} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7} {'/ bare read':>12}")
        for name, r in results.items():
            ratio = r.rps / ceiling
            print(f"{name:<38} {r.rps:>9.1f} {r.p50_ms:>9.1f} {r.p99_ms:>9.1f} {r.errors:>7} {ratio:>12.2f}")
        telecare = results[f"telecare GET {path}"]
        print(
            f"telecare / bare read: {telecare.rps / ceiling:.2f} (target >= 0.5, p99 <= 150 ms; "
            f"this run p99 {telecare.p99_ms:.0f} ms)"
        )
        if any(r.errors for r in results.values()):
            raise SystemExit("some requests failed (see the errors column)")


if __name__ == "__main__":
    main()
