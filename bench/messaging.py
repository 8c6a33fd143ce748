"""Messaging benchmark: stored-file upload throughput and message send latency under concurrent senders.

1. Upload throughput, encrypt + store (what `files.service.store_upload` does after the content check: the
   SHA-256 of the plaintext, `files.envelope.seal_object` with a fresh data key, `BlobStore.put`), in MB/s
   (10^6 bytes), for each back end: the filesystem store under a temporary directory and the S3 store
   against a local moto server (its own process, so its Python does not share the bench's GIL).
   Sequential and with a few concurrent tasks (the seal on the event loop, the put in a worker thread, as
   the service does). Same-run ceilings: (a) AES-256-GCM alone (cryptography's AESGCM on the same bytes),
   (b) the raw back-end write alone (write + fsync of one file per object; boto3 `put_object` of the
   plaintext), each at the same concurrency. The ceiling of the combination is 1 / (1/a + 1/b)
   sequentially (one after the other) and min(a, b) concurrently (encryption overlapping the writes).
2. The content check of a 12-megapixel phone JPEG (`files.content.check_upload`: decode, EXIF upright,
   sRGB, scale to 2,048 px, re-encode without metadata), ms per image, against bare Pillow doing the same
   decode + LANCZOS scale + JPEG save and nothing else.
3. Message send latency: a real `uvicorn telecare.asgi:app` (1 worker on SQLite, 2 on PostgreSQL), 20
   patients with API tokens, each with a thread of their own; C concurrent senders post text-only replies
   for D seconds, then again with one 200 KB JPEG attached to each; messages/s, p50, p99. Ceiling: the same
   multipart form posted to a bare FastAPI endpoint (served from this file, reusing `bench/bare_app.py`'s
   engine and token check) that looks up the token, inserts one row and commits it (and, with an
   attachment, writes the file's bytes with fsync first). The load comes from `wrk` (Lua script posting
   the form) when installed, else from httpx, which tops out near 300 requests/s on this machine.

    .venv/bin/python bench/messaging.py                 # SQLite
    .venv/bin/python bench/messaging.py --postgres      # a throwaway PostgreSQL (pgserver)
    .venv/bin/python bench/messaging.py --duration 20 --senders 32 --objects 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Header, UploadFile
from fastapi.responses import JSONResponse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MB = 1_000_000
S3_BUCKET, S3_KEY, S3_SECRET = "telecare-bench", "bench-key", "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# ---- 1. upload throughput ----------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server (ThreadedMotoServer, as tests/files/conftest.py) in a process of its own."""
    port = free_port()
    code = (
        "import sys, time\n"
        "from moto.server import ThreadedMotoServer\n"
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
        "s.start()\n"
        "time.sleep(10**9)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        client = s3_client(url)
        for _ in range(200):
            try:
                client.create_bucket(Bucket=S3_BUCKET)
                break
            except Exception:  # not listening yet
                time.sleep(0.05)
        else:
            raise RuntimeError("moto server did not start")
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def s3_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


async def run_tasks(items: list[Any], concurrency: int, job: Callable[[Any], Awaitable[None]]) -> float:
    """Seconds to run `job` over `items` with `concurrency` tasks."""
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await job(item)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


async def upload_rates(store: Any, raw_put: Callable[[str, bytes], None], data: bytes, n: int, conc: int):
    """(encrypt + store, raw write, BlobStore.put alone) in MB/s at `conc` tasks, `n` objects of `data`."""
    from telecare.core.blobs import new_storage_key
    from telecare.files import envelope

    master = os.urandom(32)
    keys: list[str] = []

    async def sealed_put(i: int) -> None:
        key = new_storage_key()
        keys.append(key)
        binding = envelope.Binding(
            file_id=secrets.token_hex(16),
            org_id=1,
            patient_id=1 + i,
            storage_key=key,
            content_type="image/jpeg",
            byte_size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        ciphertext, _wrapped = envelope.seal_object(master, data, binding, owner_kind="message", owner_id="1")
        await store.put(key, ciphertext)

    async def plain_put(_i: int) -> None:
        await asyncio.to_thread(raw_put, uuid.uuid4().hex, data)

    async def store_put(_i: int) -> None:
        key = new_storage_key()
        keys.append(key)
        await store.put(key, data)

    total = n * len(data) / MB
    raw = total / await run_tasks(list(range(n)), conc, plain_put)
    full = total / await run_tasks(list(range(n)), conc, sealed_put)
    put = total / await run_tasks(list(range(n)), conc, store_put)
    for key in keys:  # keep moto's memory down between runs (not timed)
        await store.delete(key)
    return full, raw, put


def aes_rate(data: bytes, n: int) -> float:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(32))
    t0 = time.perf_counter()
    for _ in range(n):
        aead.encrypt(os.urandom(12), data, b"blob:v1:")
    return n * len(data) / MB / (time.perf_counter() - t0)


async def upload_bench(args: argparse.Namespace, tmp: Path) -> None:
    from telecare.core.blobs import FilesystemBlobStore, S3BlobStore

    raw_dir = tmp / "raw"
    raw_dir.mkdir()

    def fs_raw_put(name: str, data: bytes) -> None:
        fd = os.open(raw_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    sizes = [int(s * 1000) for s in args.sizes_kb]
    print(
        f"\n== 1. upload, encrypt + store (SHA-256 + envelope seal + BlobStore.put), MB/s (10^6 B); "
        f"{args.objects} objects of each size, concurrency 1 and {args.upload_concurrency} =="
    )
    head = (
        f"{'back end':<11} {'object':>8} {'tasks':>5} {'enc+store':>10} {'AES alone':>10} {'raw write':>10}"
    )
    print(f"{head} {'ceiling':>9} {'ratio':>6} {'vs write':>9} {'put alone':>10}")
    with moto_server() as s3_url:
        s3 = s3_client(s3_url)
        backends = [
            ("filesystem", FilesystemBlobStore(tmp / "blobs"), fs_raw_put),
            (
                "s3 (moto)",
                S3BlobStore(
                    bucket=S3_BUCKET,
                    endpoint_url=s3_url,
                    access_key_id=S3_KEY,
                    secret_access_key=S3_SECRET,
                ),
                lambda name, data: s3.put_object(Bucket=S3_BUCKET, Key="raw/" + name, Body=data),
            ),
        ]
        for size in sizes:
            data = os.urandom(size)
            # as many objects of a small size as make a quarter of the large ones' bytes, at least --objects
            n = max(args.objects, args.objects * max(sizes) // size // 4)
            aes = aes_rate(data, n)
            for name, store, raw_put in backends:
                for conc in (1, args.upload_concurrency):
                    full, raw, put = await upload_rates(store, raw_put, data, n, conc)
                    ceiling = 1 / (1 / aes + 1 / raw) if conc == 1 else min(aes, raw)
                    print(
                        f"{name:<11} {size // 1000:>6} kB {conc:>5} {full:>10.1f} {aes:>10.1f} {raw:>10.1f}"
                        f" {ceiling:>9.1f} {full / ceiling:>6.2f} {full / raw:>9.2f} {put:>10.1f}",
                        flush=True,
                    )
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix="raw/"):
                for item in page.get("Contents", []):
                    s3.delete_object(Bucket=S3_BUCKET, Key=item["Key"])
            for f in raw_dir.iterdir():
                f.unlink()
        for _name, store, _raw in backends:
            await store.stop()
        s3.close()
    print(
        "ceiling: tasks 1 = 1/(1/AES + 1/raw write) (one after the other); tasks > 1 = min(AES, raw write)"
        " (encryption overlapping writes); ratio = enc+store / ceiling; 'vs write' = enc+store / raw write;"
        " 'put alone' = BlobStore.put of the same bytes, no hash or seal (where the gap is)"
    )


# ---- 2. content check of a phone photo ------------------------------------------------------------------


def phone_jpeg(width: int, height: int) -> bytes:
    """A synthetic photo: smooth structure plus sensor-like noise, so it compresses like a real one (about
    5 MB at 12 MP, quality 92)."""
    from PIL import Image

    coarse = Image.effect_noise((width // 8, height // 8), 60).convert("L")
    coarse = coarse.resize((width, height), Image.Resampling.BICUBIC)
    ramp = Image.linear_gradient("L").resize((width, height))
    grain = Image.effect_noise((width, height), 24)
    rgb = Image.merge(
        "RGB",
        (Image.blend(coarse, grain, 0.3), Image.blend(ramp, grain, 0.3), Image.blend(coarse, ramp, 0.5)),
    )
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=92)
    return out.getvalue()


def photo_check_bench(args: argparse.Namespace) -> None:
    from PIL import Image

    from telecare.config import Settings
    from telecare.files.content import check_upload
    from telecare.files.service import IMAGES_ONLY

    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    photo = phone_jpeg(4032, 3024)  # a 12 MP phone sensor (iPhone)
    edge = defaults.image_max_edge
    size = (edge, round(3024 * edge / 4032))
    checked, bare, thumb = [], [], []
    out_size = 0
    for _ in range(args.photos):
        t0 = time.perf_counter()
        result = check_upload(
            photo,
            field="file",
            accept=IMAGES_ONLY,
            max_bytes=defaults.max_upload_bytes,
            max_pixels=defaults.image_max_pixels,
            max_edge=edge,
        )
        checked.append(time.perf_counter() - t0)
        out_size = len(result.data)
        t0 = time.perf_counter()
        with Image.open(io.BytesIO(photo)) as image:  # the same steps, nothing else
            image.load()
            scaled = image.resize(size, Image.Resampling.LANCZOS)
        scaled.save(io.BytesIO(), "JPEG", quality=90)
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # diagnostic: a long edge the JPEG decoder's 1/2 draft scale satisfies
        check_upload(
            photo,
            field="file",
            accept=IMAGES_ONLY,
            max_bytes=defaults.max_upload_bytes,
            max_pixels=defaults.image_max_pixels,
            max_edge=4032 // 2,
        )
        thumb.append(time.perf_counter() - t0)
    c50, b50, t50 = (statistics.median(x) * 1000 for x in (checked, bare, thumb))
    print(
        f"\n== 2. content check + re-encode of a 12 MP (4032 x 3024) JPEG ({len(photo) / MB:.1f} MB in, "
        f"{out_size / MB:.2f} MB out at {edge} px), {args.photos} images, ms per image =="
    )
    print(f"files.content.check_upload        p50 {c50:6.0f} ms (max {max(checked) * 1000:.0f})")
    print(f"ceiling: Pillow load + LANCZOS + save  {b50:6.0f} ms; ratio (ceiling / check) {b50 / c50:.2f}")
    print(
        f"(diagnostic) check_upload with max_edge {4032 // 2} (half the width: the decoder's 1/2 draft"
        f" applies) p50 {t50:.0f} ms"
    )


# ---- 3. message send latency ------------------------------------------------------------------------------


def bare_app_factory() -> Any:
    """The send ceiling, served by uvicorn (`--factory messaging:bare_app_factory --app-dir bench`):
    bench/bare_app.py's engine (Telecare's options and SQLite pragmas) and token check; the same multipart
    form as POST /api/v1/messaging/threads/{id}/messages; one row inserted and committed per request."""
    import bare_app
    from sqlalchemy import text

    pk = "INTEGER PRIMARY KEY" if bare_app.IS_SQLITE else "BIGSERIAL PRIMARY KEY"
    ddl = (
        f"CREATE TABLE IF NOT EXISTS bench_messages (id {pk}, thread_id INTEGER NOT NULL,"
        " sender_user_id INTEGER NOT NULL, body TEXT NOT NULL, file_name VARCHAR(64), created_at VARCHAR(40))"
    )
    files_dir = Path(os.environ.get("BENCH_FILES_DIR", tempfile.gettempdir()))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with bare_app.engine.connect() as conn:
            if bare_app.IS_SQLITE:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await conn.execute(text("SELECT pg_advisory_xact_lock(8009)"))
            await conn.exec_driver_sql(ddl)
            await conn.commit()
        yield
        await bare_app.engine.dispose()

    app = FastAPI(lifespan=lifespan)

    def write_file(name: str, data: bytes) -> None:
        fd = os.open(files_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    @app.post("/bare/threads/{thread_id}/messages", status_code=201)
    async def send(
        thread_id: int,
        body: Annotated[str, Form(max_length=10_000)],
        files: Annotated[list[UploadFile], File()] = [],  # noqa: B006
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        name = None
        if files:
            name = secrets.token_hex(16)
            await asyncio.to_thread(write_file, name, await files[0].read())
        async with bare_app.engine.connect() as conn:
            if bare_app.IS_SQLITE:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            user_id = await bare_app._user_id(conn, authorization)
            row = await conn.execute(
                text(
                    "INSERT INTO bench_messages (thread_id, sender_user_id, body, file_name, created_at)"
                    " VALUES (:t, :u, :b, :f, :at) RETURNING id"
                ),
                {"t": thread_id, "u": user_id, "b": body, "f": name, "at": str(time.time())},
            )
            message_id = row.scalar_one()
            await conn.commit()
        return JSONResponse({"id": message_id, "thread_id": thread_id}, status_code=201)

    return app


@contextlib.contextmanager
def throwaway_pgserver(workdir: Path) -> Iterator[str]:
    import pgserver
    import psycopg
    from sqlalchemy.engine import make_url

    server = pgserver.get_server(str(workdir / "pg"), cleanup_mode="stop")
    try:
        admin = server.get_uri()
        name = f"telecare_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = make_url(admin.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        server.cleanup()


async def setup_practice(url: str, tmp: Path, patients: int) -> tuple[int, list[str]]:
    """An organization with a primary-care inbox (a physician and a nurse as members) and `patients`
    patients with a login and an API token each: (inbox id, tokens)."""
    from ingest import settings_for
    from tests.factories import Account, make_org, make_patient, make_user, setup_uow, token_for

    from telecare.core import migrate
    from telecare.core.db import Database
    from telecare.domains import install as install_domains
    from telecare.identity.models import Role
    from telecare.messaging.models import Inbox, InboxKind, InboxMember

    migrate.upgrade(url)
    install_domains()
    db = Database(settings_for(url, tmp))
    try:
        org = await make_org(db)
        async with setup_uow(db) as s:
            inbox = Inbox(org_id=org, slug="primary", name="Primary care", kind=InboxKind.PRIMARY_CARE)
            s.add(inbox)
            await s.flush()
            inbox_id = inbox.id
        staff = [await make_user(db, org, role) for role in (Role.PHYSICIAN, Role.NURSE)]
        async with setup_uow(db) as s:
            for acc in staff:
                s.add(InboxMember(org_id=org, inbox_id=inbox_id, user_id=acc.user_id))
        tokens = []
        for _ in range(patients):
            acc = await make_patient(db, org, with_login=True)
            assert isinstance(acc, Account)
            tokens.append(await token_for(db, acc))
    finally:
        await db.dispose()
    return inbox_id, tokens


def multipart(fields: dict[str, str], file: bytes | None) -> tuple[bytes, str]:
    boundary = "telecarebench" + secrets.token_hex(8)
    out = bytearray()
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    if file is not None:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        out += file + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


async def start_threads(base: str, inbox_id: int, tokens: list[str]) -> list[int]:
    import httpx

    ids = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for i, token in enumerate(tokens):
            r = await client.post(
                "/api/v1/messaging/threads",
                data={"inbox_id": str(inbox_id), "subject": f"Question {i}", "body": "Hello, a question."},
                headers={"Authorization": f"Bearer {token}"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"start thread: {r.status_code} {r.text[:300]}")
            ids.append(int(r.json()["thread_id"]))
    return ids


WRK_SCRIPT = """
-- One reply per request: sender (token, thread) pairs in turn, the same multipart form each time.
local pairs_ = {%(pairs)s}
local prefix = "%(prefix)s"
local f = io.open("%(body_path)s", "rb")
local form = f:read("*a")
f:close()
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
function request()
  n = n + 1
  local p = pairs_[((tid * 7 + n) %% #pairs_) + 1]
  return wrk.format("POST", prefix .. p[2] .. "/messages",
    {["Authorization"] = "Bearer " .. p[1], ["Content-Type"] = "%(ctype)s"}, form)
end
"""


def wrk_load(
    base: str, prefix: str, senders: list[tuple[str, int]], form: bytes, ctype: str, args: argparse.Namespace
) -> dict[str, float]:
    body_path = Path(args.tmp) / f"form-{secrets.token_hex(4)}.bin"
    body_path.write_bytes(form)
    script = body_path.with_suffix(".lua")
    pairs = ", ".join(f"{{{json.dumps(t)}, {th}}}" for t, th in senders)
    script.write_text(WRK_SCRIPT % {"pairs": pairs, "prefix": prefix, "body_path": body_path, "ctype": ctype})
    threads = min(2, args.senders)
    argv = [args.wrk, f"-t{threads}", f"-c{args.senders}", f"-d{args.duration:g}s", "--latency"]
    argv += ["--timeout", "30s", "-s", str(script), base]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def grab(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, out)
        if m is None:
            if default is None:
                raise RuntimeError(f"wrk output without {pattern!r}:\n{out}")
            return default
        return m.group(1)

    def latency(pct: str) -> float:
        m = re.search(rf"\b{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        return (
            float("nan") if m is None else float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
        )

    total = int(grab(r"(\d+) requests in"))
    bad = int(grab(r"Non-2xx or 3xx responses:\s+(\d+)", "0"))
    errors = sum(
        int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", grab(r"Socket errors:(.*)", ""))
    )
    rps = float(grab(r"Requests/sec:\s+([\d.]+)"))
    return {"rps": rps * (total - bad) / max(1, total), "p50": latency("50"), "p99": latency("99"),
            "errors": bad + errors, "n": total}  # fmt: skip


async def httpx_load(
    base: str, prefix: str, senders: list[tuple[str, int]], form: bytes, ctype: str, args: argparse.Namespace
) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + args.duration
    limits = httpx.Limits(max_connections=args.senders, max_keepalive_connections=args.senders)

    async def sender(client: httpx.AsyncClient, i: int) -> None:
        nonlocal errors
        token, thread = senders[i % len(senders)]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": ctype}
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = await client.post(f"{prefix}{thread}/messages", content=form, headers=headers)
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 201

    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(sender(client, i) for i in range(args.senders)))
        elapsed = time.perf_counter() - t0
    return {"rps": (len(latencies) - errors) / elapsed, "p50": percentile(latencies, 50) * 1000,
            "p99": percentile(latencies, 99) * 1000, "errors": errors, "n": len(latencies)}  # fmt: skip


async def load(
    base: str, prefix: str, senders: list[tuple[str, int]], attachment: bytes | None, args: argparse.Namespace
) -> dict[str, float]:
    form, ctype = multipart({"body": "Thank you, the swelling is a little better today."}, attachment)
    if args.wrk:
        return await asyncio.to_thread(wrk_load, base, prefix, senders, form, ctype, args)
    return await httpx_load(base, prefix, senders, form, ctype, args)


def count_messages(url: str, table: str) -> int:
    from sqlalchemy import create_engine, text

    sync_url = url.replace("+aiosqlite", "")
    engine = create_engine(sync_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


@contextlib.contextmanager
def bare_server(url: str, tmp: Path, workers: int) -> Iterator[str]:
    import httpx

    port = free_port()
    files_dir = tmp / "bare-files"
    files_dir.mkdir(exist_ok=True)
    env = {**os.environ, "BENCH_DATABASE_URL": url, "BENCH_FILES_DIR": str(files_dir)}
    argv = [sys.executable, "-m", "uvicorn", "--factory", "messaging:bare_app_factory"]
    argv += ["--app-dir", str(ROOT / "bench"), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(argv, env=env, cwd=tmp)
    try:
        for _ in range(400):
            if proc.poll() is not None:
                raise RuntimeError("bare app exited")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)


async def send_bench(args: argparse.Namespace, tmp: Path, url: str, postgres: bool) -> None:
    from ingest import Server, profiling

    workers = args.workers or (2 if postgres else 1)
    inbox_id, tokens = await setup_practice(url, tmp, args.patients)
    attachment = phone_jpeg(800, 600)
    client = "wrk" if args.wrk else "httpx (tops out near 300 req/s here)"
    kind = f"PostgreSQL, {workers} workers" if postgres else "SQLite (WAL, synchronous=FULL), 1 worker"
    print(
        f"\n== 3. message send, {args.senders} concurrent senders x {args.duration:g} s, {len(tokens)}"
        f" patients replying in their own threads; {kind}; client {client}; {os.cpu_count()} CPUs shared =="
    )
    results: dict[str, dict[str, float]] = {}
    data_dir = tmp / "data"
    async with Server(url, data_dir, workers) as server:
        base = f"http://127.0.0.1:{server.port}"
        threads = await start_threads(base, inbox_id, tokens)
        senders = list(zip(tokens, threads, strict=True))
        prefix = "/api/v1/messaging/threads/"
        for label, file in (("text only", None), (f"+ 1 JPEG ({len(attachment) // 1000} KB)", attachment)):
            before = count_messages(url, "messages")
            pid = server.proc.pid if server.proc else 0
            with profiling(args.profile if file else None, pid, args.duration):
                r = await load(base, prefix, senders, file, args)
            stored = count_messages(url, "messages") - before
            results[f"telecare {label}"] = {**r, "stored": stored}
    with bare_server(url, tmp, workers) as base:
        for label, file in (("text only", None), (f"+ 1 JPEG ({len(attachment) // 1000} KB)", attachment)):
            r = await load(base, "/bare/threads/", senders, file, args)
            results[f"bare {label}"] = {**r, "stored": float("nan")}
    print(
        f"{'endpoint':<30} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'stored':>7}"
        f" {'/ bare':>7}"
    )
    for name, r in results.items():
        bare = results[name.replace("telecare", "bare")]
        stored = "" if r["stored"] != r["stored"] else f"{int(r['stored'])}"
        print(
            f"{name:<30} {r['rps']:>8.1f} {r['p50']:>8.1f} {r['p99']:>8.1f} {int(r['errors']):>7} {stored:>7}"
            f" {r['rps'] / bare['rps']:>7.2f}"
        )
    print(
        "ceiling ('bare'): the same multipart form to a bare FastAPI endpoint on the same database: token"
        " lookup + one row inserted and committed (+ the file's bytes written with fsync)"
    )


# ---- main --------------------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="telecare-bench-messaging-") as name:
        tmp = Path(name)
        args.tmp = str(tmp)
        t0 = time.perf_counter()
        if not args.skip_uploads:
            await upload_bench(args, tmp)
            photo_check_bench(args)
        if args.duration > 0:
            with contextlib.ExitStack() as stack:
                if args.postgres:
                    url = stack.enter_context(throwaway_pgserver(tmp))
                else:
                    url = f"sqlite+aiosqlite:///{tmp / 'telecare.db'}"
                await send_bench(args, tmp, url, args.postgres)
        print(f"\n(total {time.perf_counter() - t0:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", "--pgserver", action="store_true", help="a throwaway local PostgreSQL")
    parser.add_argument("--workers", type=int, help="uvicorn workers (default 1 on SQLite, 2 on PostgreSQL)")
    parser.add_argument(
        "--sizes-kb", type=int, nargs="+", default=[2000, 256], help="object sizes (kB, 10^3 bytes)"
    )
    parser.add_argument("--objects", type=int, default=30, help="objects of the largest size per run")
    parser.add_argument("--upload-concurrency", type=int, default=4, help="concurrent upload tasks")
    parser.add_argument("--photos", type=int, default=5, help="12 MP photos to check")
    parser.add_argument("--patients", type=int, default=20, help="patients, each sending in their own thread")
    parser.add_argument("--senders", type=int, default=16, help="concurrent senders (connections)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per send run (0: skip part 3)")
    parser.add_argument(
        "--profile", type=Path, help="py-spy raw stacks of Telecare's server during the attachment run"
    )
    parser.add_argument("--skip-uploads", action="store_true", help="only part 3")
    parser.add_argument("--wrk", default=shutil.which("wrk"), help="the wrk binary ('' to use httpx)")
    args = parser.parse_args()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
