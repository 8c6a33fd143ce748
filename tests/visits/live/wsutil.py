"""Small WebSocket client helpers for the live tests and the signaling bench."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus


async def open_socket(url: str, cookie: str | None = None, **headers: str) -> ClientConnection:
    extra = dict(headers)
    if cookie:
        extra["Cookie"] = cookie
    return await connect(url, additional_headers=extra, open_timeout=10, max_size=2**20)


async def refused_status(url: str, cookie: str | None = None, **headers: str) -> int:
    """The HTTP status of a refused handshake (fails if the server accepted)."""
    try:
        ws = await open_socket(url, cookie, **headers)
    except InvalidStatus as exc:
        return int(exc.response.status_code)
    await ws.close()
    raise AssertionError(f"{url} accepted the connection")


async def expect(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of this type (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message.get("type") == kind:
                return dict(message)


async def quiet(ws: ClientConnection, seconds: float = 0.4) -> list[dict[str, Any]]:
    """Messages that arrive within `seconds` (expected: none of a given kind)."""
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                out.append(json.loads(await ws.recv()))
    except TimeoutError:
        return out


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))
