"""How many concurrent visits the signaling server sustains, and the p99 latency of relaying one message.

Starts `telecare serve` (one worker, loopback, a fresh SQLite database unless --database-url names a
PostgreSQL one) and seeds N admitted visits. Each visit opens two authenticated WebSockets (patient and
clinician, session cookies) to /ws/visits/<id>/signal, then exchanges what a browser pair does: a ~5 KB
offer, a ~5 KB answer and --candidates trickled ICE candidates each way, then keeps trickling one candidate
per second per socket for --hold seconds. Every message carries a marker; the receiving socket (same
process, same monotonic clock) records its one-way relay latency.

Levels ramp (--levels) until one fails: a level is sustained when every visit connects, every message
arrives within the deadline, nothing is refused, and the relay p99 stays under --p99-limit-ms. Bounded in
count (--levels) and time (--max-seconds). The load generator shares the machine's cores with the server,
so the figures are pessimistic.

The same-run ceiling: the same levels against `bench/bare_relay.py` (a bare FastAPI WebSocket relay on the
same database: session cookie and participant checked on connect, then plain relay, one worker), then the
ratio of sustained visits and both steady relay p99s at the highest level both sustained (--no-ceiling: skip).

    .venv/bin/python bench/signaling.py --levels 25,50,100,200,300 --max-seconds 240
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from telecare.auth import sessions
from telecare.auth.principal import system_principal
from telecare.config import Mode, Settings
from telecare.core import migrate
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.domains import install as install_domains
from telecare.identity import service as identity
from telecare.identity.models import Organization, Patient, Practitioner, Role, Sex
from telecare.scheduling.models import Appointment, AppointmentStatus, Modality, PatientKind, VisitType
from telecare.visits.models import ParticipantRole, VisitParticipant

BENCH_DIR = str(Path(__file__).resolve().parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A Chrome-like audio+video offer is 4-8 KB; this one is ~5 KB.
SDP_BODY = "".join(
    f"a=rtpmap:{96 + i} VP8/90000\r\na=rtcp-fb:{96 + i} goog-remb\r\na=rtcp-fb:{96 + i} transport-cc\r\n"
    f"a=rtcp-fb:{96 + i} nack\r\na=fmtp:{97 + i} apt={96 + i}\r\n"
    for i in range(45)
)


def sdp(marker: str) -> str:
    return f"v=0\r\no=- {marker} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=bench:{marker}\r\n{SDP_BODY}"


def candidate(marker: str) -> dict[str, Any]:
    return {
        "candidate": f"candidate:{marker} 1 udp 2122260223 127.0.0.1 9 typ host generation 0",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


@dataclass
class VisitSeed:
    appointment_id: int
    patient_cookie: str
    patient_peer: str
    doctor_cookie: str
    doctor_peer: str


async def seed(settings: Settings, count: int) -> list[VisitSeed]:
    """`count` visits in progress, each with its own patient and clinician and a web session for both."""
    install_domains()
    db = Database(settings)
    out: list[VisitSeed] = []
    try:
        async with db.unit_of_work() as s:
            org = Organization(name="Bench clinic", slug=f"bench-{os.getpid()}-{time.time_ns()}")
            s.add(org)
            await s.flush()
            vt = VisitType(
                org_id=org.id,
                name="Follow-up",
                duration_minutes=30,
                modalities=[Modality.VIDEO, Modality.AUDIO],
                patient_kind=PatientKind.ESTABLISHED,
            )
            s.add(vt)
            await s.flush()
            now = utc_now()
            for i in range(count):
                pu = await identity.create_user(
                    s,
                    system_principal(org.id),
                    email=f"p{i}@bench.test",
                    role=Role.PATIENT,
                    display_name=f"Patient {i}",
                    password=None,
                )
                du = await identity.create_user(
                    s,
                    system_principal(org.id),
                    email=f"d{i}@bench.test",
                    role=Role.PHYSICIAN,
                    display_name=f"Doctor {i}",
                    password=None,
                )
                patient = Patient(
                    org_id=org.id,
                    user_id=pu.id,
                    mrn=f"B{i:06d}",
                    given_name="Bench",
                    family_name=str(i),
                    birth_date=date(1970, 1, 1),
                    sex=Sex.UNKNOWN,
                    state="PA",
                )
                prac = Practitioner(
                    org_id=org.id, user_id=du.id, npi=f"{2000000000 + i}", credentials="MD", timezone="UTC"
                )
                s.add_all([patient, prac])
                await s.flush()
                appt = Appointment(
                    org_id=org.id,
                    patient_id=patient.id,
                    practitioner_id=prac.id,
                    visit_type_id=vt.id,
                    start_at=now - timedelta(minutes=5),
                    end_at=now + timedelta(minutes=25),
                    modality=Modality.VIDEO,
                    booked_modality=Modality.VIDEO,
                    status=AppointmentStatus.IN_PROGRESS,
                    expected_state="PA",
                    booked_by_user_id=pu.id,
                )
                s.add(appt)
                await s.flush()
                s.add_all(
                    [
                        VisitParticipant(
                            appointment_id=appt.id,
                            role=ParticipantRole.PATIENT,
                            user_id=pu.id,
                            display_name=pu.display_name,
                        ),
                        VisitParticipant(
                            appointment_id=appt.id,
                            role=ParticipantRole.PRACTITIONER,
                            user_id=du.id,
                            display_name=du.display_name,
                        ),
                    ]
                )
                ps = await sessions.create_web_session(s, pu, client_addr="127.0.0.1", mfa_verified=True)
                ds = await sessions.create_web_session(s, du, client_addr="127.0.0.1", mfa_verified=True)
                out.append(VisitSeed(appt.id, ps.token, f"u{pu.id}", ds.token, f"u{du.id}"))
    finally:
        await db.dispose()
    return out


@dataclass
class Level:
    visits: int
    connected: int = 0
    refused: int = 0
    errors: int = 0
    lost: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # setup: offer, answer, trickled candidates
    steady_ms: list[float] = field(default_factory=list)  # sustained: one candidate per second per socket
    steady: bool = False
    connect_seconds: float = 0.0
    exchange_seconds: float = 0.0


class Peer:
    """One bench socket: sends marked messages, records the latency of marked messages it receives."""

    def __init__(self, ws: ClientConnection, me: str, other: str, level: Level, sent: dict[str, float]):
        self.ws, self.me, self.other, self.level, self.sent = ws, me, other, level, sent
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self.read())
        self.seq = 0

    async def read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                now = time.perf_counter()
                message = json.loads(raw)
                kind = message.get("type")
                marker = None
                if kind in ("offer", "answer"):
                    marker = message["sdp"].split("a=bench:", 1)[1].split("\r\n", 1)[0]
                elif kind == "candidate" and message.get("candidate"):
                    marker = message["candidate"]["candidate"].split(" ", 1)[0].split(":", 1)[1]
                elif kind == "error":
                    self.level.errors += 1
                if marker is not None:
                    started = self.sent.pop(marker, None)
                    if started is not None:
                        bucket = self.level.steady_ms if self.level.steady else self.level.latencies_ms
                        bucket.append((now - started) * 1000)
                await self.inbox.put(message)

    def marker(self) -> str:
        self.seq += 1
        return f"{self.me}x{self.seq}"

    async def send(self, kind: str) -> None:
        mark = self.marker()
        if kind == "candidate":
            message: dict[str, Any] = {"type": kind, "to": self.other, "candidate": candidate(mark)}
        else:
            message = {"type": kind, "to": self.other, "sdp": sdp(mark)}
        self.sent[mark] = time.perf_counter()
        await self.ws.send(json.dumps(message))

    async def wait_for(self, kind: str, count: int = 1) -> None:
        got = 0
        while got < count:
            message = await self.inbox.get()
            if message.get("type") == kind:
                got += 1


async def open_peer(
    base_ws: str, visit: VisitSeed, cookie: str, level: Level, gate: asyncio.Semaphore
) -> ClientConnection | None:
    async with gate:
        try:
            ws = await connect(
                f"{base_ws}/ws/visits/{visit.appointment_id}/signal",
                additional_headers={"Cookie": f"tc_session={cookie}"},
                open_timeout=30,
                max_size=2**20,
            )
        except Exception:
            level.refused += 1
            return None
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            level.refused += 1
            await ws.close()
            return None
        level.connected += 1
        return ws


async def run_level(
    base_ws: str, visits: list[VisitSeed], args: argparse.Namespace, sent: dict[str, float]
) -> Level:
    level = Level(len(visits))
    gate = asyncio.Semaphore(args.connect_concurrency)
    started = time.perf_counter()
    sockets = await asyncio.gather(
        *(
            open_peer(base_ws, v, cookie, level, gate)
            for v in visits
            for cookie in (v.patient_cookie, v.doctor_cookie)
        )
    )
    level.connect_seconds = time.perf_counter() - started
    pairs: list[tuple[Peer, Peer]] = []
    for i, v in enumerate(visits):
        p_ws, d_ws = sockets[2 * i], sockets[2 * i + 1]
        if p_ws is None or d_ws is None:
            continue
        pairs.append(
            (
                Peer(p_ws, v.patient_peer, v.doctor_peer, level, sent),
                Peer(d_ws, v.doctor_peer, v.patient_peer, level, sent),
            )
        )

    setups_done = 0
    all_set = asyncio.Event()

    async def exchange(i: int, p: Peer, d: Peer) -> None:
        nonlocal setups_done
        # Visits do not all start in the same millisecond: spread the setups over --stagger seconds.
        await asyncio.sleep(args.stagger * i / max(1, len(pairs)))
        await p.send("offer")
        await d.wait_for("offer")
        await d.send("answer")
        await p.wait_for("answer")
        for _ in range(args.candidates):
            await p.send("candidate")
            await d.send("candidate")
        await asyncio.gather(
            d.wait_for("candidate", args.candidates), p.wait_for("candidate", args.candidates)
        )
        setups_done += 1
        if setups_done == len(pairs):
            level.steady = True
            all_set.set()
        await all_set.wait()
        # Sustained phase, every visit set up: one trickled candidate per second per socket, spread out.
        await asyncio.sleep(i / max(1, len(pairs)))
        for _ in range(args.hold):
            await asyncio.sleep(1)
            await p.send("candidate")
            await d.send("candidate")
        await asyncio.gather(d.wait_for("candidate", args.hold), p.wait_for("candidate", args.hold))

    started = time.perf_counter()
    try:
        async with asyncio.timeout(args.deadline + args.stagger + args.hold):
            await asyncio.gather(*(exchange(i, p, d) for i, (p, d) in enumerate(pairs)))
    except TimeoutError:
        pass
    level.exchange_seconds = time.perf_counter() - started
    level.lost = len(sent)
    sent.clear()
    for p, d in pairs:
        for peer in (p, d):
            peer.reader.cancel()
            with contextlib.suppress(Exception):
                await peer.ws.close()
    return level


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sustained(level: Level, limit_ms: float) -> bool:
    return (
        level.connected == 2 * level.visits
        and level.refused == 0
        and level.errors == 0
        and level.lost == 0
        and bool(level.steady_ms)
        and percentile(level.steady_ms, 0.99) <= limit_ms
    )


HEADER = (
    "                                          setup relay (ms)    steady relay (ms)\n"
    " visits sockets connected refused  lost messages       p50       p99       p50       p99  "
    "max(ms) connect(s) sustained"
)


async def wait_healthy(port: int, path: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(150):
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"http://127.0.0.1:{port}{path}")).status_code in (200, 404):
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


async def ramp(port: int, visits: list[VisitSeed], args: argparse.Namespace) -> tuple[int, dict[int, float]]:
    """Levels until one fails: (highest sustained level, steady p99 ms per sustained level)."""
    levels = [int(x) for x in args.levels.split(",")]
    print(HEADER, flush=True)
    deadline = time.monotonic() + args.max_seconds
    best = 0
    p99s: dict[int, float] = {}
    sent: dict[str, float] = {}
    for n in levels:
        if time.monotonic() > deadline:
            print("time budget used up", flush=True)
            break
        level = await run_level(f"ws://127.0.0.1:{port}", visits[:n], args, sent)
        if not report(level, args.p99_limit_ms):
            break
        best = n
        p99s[n] = percentile(level.steady_ms, 0.99)
        await asyncio.sleep(1)
    return best, p99s


def report(level: Level, limit_ms: float) -> bool:
    setup, steady = level.latencies_ms, level.steady_ms
    ok = sustained(level, limit_ms)
    print(
        f"{level.visits:>6} {2 * level.visits:>7} {level.connected:>9} {level.refused:>7} {level.lost:>5} "
        f"{len(setup) + len(steady):>8} {percentile(setup, 0.5):>9.2f} {percentile(setup, 0.99):>9.2f} "
        f"{percentile(steady, 0.5):>9.2f} {percentile(steady, 0.99):>9.2f} {max(steady or [0.0]):>8.2f} "
        f"{level.connect_seconds:>9.2f} {'yes' if ok else 'NO'}",
        flush=True,
    )
    return ok


async def main_async(args: argparse.Namespace) -> int:
    levels = [int(x) for x in args.levels.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="telecare-bench-"))
    port = free_port()
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    env = {
        "TELECARE_MODE": "test",
        "TELECARE_DATABASE_URL": url,
        "TELECARE_DATA_DIR": str(tmp / "data"),
        "TELECARE_BASE_URL": f"http://127.0.0.1:{port}",
        "TELECARE_SESSION_SECRET": "bench-session-secret-" + "s" * 40,
        "TELECARE_AUDIT_HMAC_KEY": "bench-audit-key-" + "a" * 40,
        "TELECARE_LOG_LEVEL": "WARNING",
    }
    settings = Settings(
        mode=Mode.TEST,
        database_url=url,
        data_dir=tmp / "data",
        session_secret=env["TELECARE_SESSION_SECRET"],  # type: ignore[arg-type]
        audit_hmac_key=env["TELECARE_AUDIT_HMAC_KEY"],  # type: ignore[arg-type]
        _env_file=None,  # type: ignore[call-arg]
    )
    migrate.upgrade(settings.database_url)
    t0 = time.perf_counter()
    all_visits = await seed(settings, max(levels))  # each level reuses the first n (they rejoin)
    print(f"seeded {len(all_visits)} admitted visits in {time.perf_counter() - t0:.1f} s", flush=True)
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [
            sys.executable,
            *("-m", "telecare", "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(args.workers)),
        ],
        cwd=tmp,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_healthy(port, "/healthz")
        print(
            f"database: {'PostgreSQL' if settings.is_postgres else 'SQLite'}; "
            f"server: {args.workers} uvicorn worker(s); "
            f"cpus: {os.cpu_count()}; per visit: offer+answer ~{len(sdp('x'))} B, "
            f"{args.candidates} candidates each way, setups spread over {args.stagger} s, "
            f"then {args.hold} s of 1 candidate/s per socket",
            flush=True,
        )
        best, p99s = await ramp(port, all_visits, args)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    limit = args.p99_limit_ms
    print(f"sustained: {best} concurrent visits ({2 * best} WebSockets) with relay p99 <= {limit} ms")
    if args.no_ceiling:
        return 0
    bare_port = free_port()
    bare_url = url.replace("sqlite:///", "sqlite+aiosqlite:///", 1)
    if bare_url.startswith("postgresql://"):
        bare_url = bare_url.replace("postgresql://", "postgresql+psycopg://", 1)
    bare_log = (tmp / "bare.log").open("w")
    bare = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [
            sys.executable,
            *("-m", "uvicorn", "bare_relay:app", "--app-dir", BENCH_DIR),
            *("--host", "127.0.0.1", "--port", str(bare_port), "--no-access-log", "--log-level", "warning"),
            "--ws-max-size=65536",
        ],
        cwd=tmp,
        env={**os.environ, "BENCH_DATABASE_URL": bare_url},
        stdout=bare_log,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_healthy(bare_port, "/")
        print("\nceiling: bare FastAPI WebSocket relay (bench/bare_relay.py), 1 worker, same db", flush=True)
        bare_best, bare_p99s = await ramp(bare_port, all_visits, args)
    finally:
        bare.terminate()
        try:
            bare.wait(10)
        except subprocess.TimeoutExpired:
            bare.kill()
        bare_log.close()
    print(f"ceiling sustained: {bare_best} concurrent visits with relay p99 <= {args.p99_limit_ms} ms")
    ratio = f"{best / bare_best:.2f}" if bare_best else "n/a"
    common = max(set(p99s) & set(bare_p99s), default=None)
    at = (
        f"; steady p99 at {common} visits: telecare {p99s[common]:.2f} ms, bare {bare_p99s[common]:.2f} ms"
        if common
        else ""
    )
    print(f"telecare / bare relay (sustained visits): {ratio} (capped by --levels){at}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="25,50,100,200,300", help="concurrent visits per step")
    parser.add_argument("--candidates", type=int, default=8, help="trickled candidates each way per visit")
    parser.add_argument("--hold", type=int, default=5, help="seconds of 1 candidate/s per socket")
    parser.add_argument("--stagger", type=float, default=5.0, help="seconds over which setups start")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds for one level's exchange")
    parser.add_argument("--p99-limit-ms", type=float, default=250.0)
    parser.add_argument("--connect-concurrency", type=int, default=32, help="handshakes in flight")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="stop ramping after this")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: a fresh SQLite file)")
    parser.add_argument(
        "--pgserver", action="store_true", help="start a throwaway PostgreSQL (pgserver) on a local socket"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn workers (PostgreSQL only: rooms span workers)"
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare relay ceiling")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if max(levels) > 1000 or len(levels) > 12:
        parser.error("bounded: at most 1000 visits per level and 12 levels")
    if args.workers > 1 and not (args.pgserver or args.database_url):
        parser.error("several workers need PostgreSQL (on SQLite the event bus is in-process)")
    if not 1 <= args.workers <= 4:
        parser.error("--workers between 1 and 4")
    if args.pgserver:
        import pgserver

        datadir = Path(tempfile.mkdtemp(prefix="telecare-bench-pg-"))
        pg = pgserver.get_server(str(datadir), cleanup_mode="stop")
        try:
            admin = pg.get_uri()
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("CREATE DATABASE telecare_bench")
            from sqlalchemy.engine import make_url

            args.database_url = (
                make_url(admin.replace("postgresql://", "postgresql+psycopg://", 1))
                .set(database="telecare_bench")
                .render_as_string(hide_password=False)
            )
            return asyncio.run(main_async(args))
        finally:
            pg.cleanup()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
