"""The read benchmark's same-stack ceilings: a bare FastAPI + SQLAlchemy async app, no Telecare code.

Served by uvicorn from `bench/reads.py` (never imported by Telecare) on a copy of the benchmark's own database
(SQLite: a backup of the file, same pragmas as Telecare: WAL, synchronous=FULL, busy_timeout; PostgreSQL: the
same database). Two endpoints, both authenticated with a Telecare API token (`tc_<id>_<secret>`, looked up by
id and compared by SHA-256 digest, revocation, expiry and the user's `is_active` checked):

- `GET /read/{patient_id}`: the token lookup and the patient row read, nothing written.
- `GET /audited/{patient_id}`: the same in one write transaction (`BEGIN IMMEDIATE` on SQLite) that also
  inserts one audit-like row into `bench_audit` and commits it, per request: the naive audited read.

    BENCH_DATABASE_URL=sqlite+aiosqlite:////tmp/x.db python -m uvicorn bare_app:app --app-dir bench
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

URL = os.environ.get("BENCH_DATABASE_URL", "sqlite+aiosqlite:///bench-bare.db")
IS_SQLITE = URL.startswith("sqlite")
# The engine options Telecare's Database uses.
if IS_SQLITE:
    engine = create_async_engine(URL, connect_args={"timeout": 30})
else:
    engine = create_async_engine(URL, pool_size=10, max_overflow=10, pool_pre_ping=True)

if IS_SQLITE:

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, as Telecare does
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()


AUDIT_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_audit (id {pk}, at VARCHAR(40) NOT NULL,"
    " actor_user_id INTEGER NOT NULL, action VARCHAR(40) NOT NULL, patient_id INTEGER NOT NULL,"
    " detail VARCHAR(200) NOT NULL)"
).format(pk="INTEGER PRIMARY KEY" if IS_SQLITE else "BIGSERIAL PRIMARY KEY")


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with engine.connect() as conn:
        if IS_SQLITE:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:  # two workers start at once: one creates the table
            await conn.execute(text("SELECT pg_advisory_xact_lock(8008)"))
        await conn.exec_driver_sql(AUDIT_DDL)
        await conn.commit()
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def _user_id(conn: AsyncConnection, authorization: str | None) -> int:
    token = (authorization or "").removeprefix("Bearer ")
    token_id, _, secret = token.removeprefix("tc_").partition("_")
    if not token_id.isdigit() or not secret:
        raise HTTPException(401)
    row = (
        await conn.execute(
            text("SELECT user_id, token_hash, revoked_at, expires_at FROM api_tokens WHERE id = :id"),
            {"id": int(token_id)},
        )
    ).one_or_none()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
        raise HTTPException(401)
    active = (
        await conn.execute(text("SELECT is_active FROM users WHERE id = :id"), {"id": row.user_id})
    ).scalar_one_or_none()
    if not active:
        raise HTTPException(401)
    return int(row.user_id)


async def _patient(conn: AsyncConnection, patient_id: int) -> dict[str, Any]:
    row = (
        await conn.execute(text("SELECT * FROM patients WHERE id = :id"), {"id": patient_id})
    ).one_or_none()
    if row is None:
        raise HTTPException(404)
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row._mapping.items()}


@app.get("/read/{patient_id}")
async def read(patient_id: int, authorization: str | None = Header(None)) -> dict[str, Any]:
    async with engine.connect() as conn:
        await _user_id(conn, authorization)
        return await _patient(conn, patient_id)


@app.get("/audited/{patient_id}")
async def audited(patient_id: int, authorization: str | None = Header(None)) -> dict[str, Any]:
    async with engine.connect() as conn:
        if IS_SQLITE:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        user_id = await _user_id(conn, authorization)
        body = await _patient(conn, patient_id)
        await conn.execute(
            text(
                "INSERT INTO bench_audit (at, actor_user_id, action, patient_id, detail)"
                " VALUES (:at, :user, 'read', :patient, :detail)"
            ),
            {
                "at": datetime.now(UTC).isoformat(),
                "user": user_id,
                "patient": patient_id,
                "detail": f"GET /audited/{patient_id}",
            },
        )
        await conn.commit()
        return body
