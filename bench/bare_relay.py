"""The signaling benchmark's same-stack ceiling: a bare FastAPI + SQLAlchemy async WebSocket relay.

Served by uvicorn from `bench/signaling.py` (one worker: rooms live in this process) on the benchmark's own
database. It speaks just enough of `/ws/visits/{id}/signal` for the bench client: on connect it looks the
`tc_session` cookie up (SHA-256 digest, revocation, expiry) and checks the user is a participant of the visit,
sends `{"type": "welcome"}`, then relays every JSON message to the room member named by its `to` field
(`u<user id>`), adding `from`. No Telecare code, no rate limits, no re-checks, no events.

    BENCH_DATABASE_URL=sqlite+aiosqlite:////tmp/x.db python -m uvicorn bare_relay:app --app-dir bench
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

URL = os.environ.get("BENCH_DATABASE_URL", "sqlite+aiosqlite:///bench-bare.db")
engine = create_async_engine(URL)
rooms: dict[int, dict[str, WebSocket]] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


async def _user_id(cookie: str | None, appointment_id: int) -> int | None:
    if not cookie:
        return None
    digest = hashlib.sha256(cookie.encode()).hexdigest()
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT user_id, revoked_at, expires_at FROM web_sessions WHERE token_hash = :h"),
                {"h": digest},
            )
        ).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        expires = row.expires_at  # a string on SQLite (raw SQL, no UTCDateTime type)
        expires = datetime.fromisoformat(expires) if isinstance(expires, str) else expires
        if expires.replace(tzinfo=expires.tzinfo or UTC) <= datetime.now(UTC):
            return None
        member = (
            await conn.execute(
                text("SELECT 1 FROM visit_participants WHERE appointment_id = :a AND user_id = :u"),
                {"a": appointment_id, "u": row.user_id},
            )
        ).scalar_one_or_none()
    return int(row.user_id) if member else None


@app.websocket("/ws/visits/{appointment_id}/signal")
async def signal(ws: WebSocket, appointment_id: int) -> None:
    user_id = await _user_id(ws.cookies.get("tc_session"), appointment_id)
    if user_id is None:
        await ws.close(code=4401)
        return
    await ws.accept()
    me = f"u{user_id}"
    room = rooms.setdefault(appointment_id, {})
    room[me] = ws
    await ws.send_text(json.dumps({"type": "welcome", "peer": me}))
    try:
        while True:
            message = json.loads(await ws.receive_text())
            target = room.get(str(message.get("to")))
            if target is not None:
                message["from"] = me
                with contextlib.suppress(Exception):
                    await target.send_text(json.dumps(message))
    except WebSocketDisconnect:
        pass
    finally:
        room.pop(me, None)
        if not room:
            rooms.pop(appointment_id, None)
