"""ASGI middleware: body size limit (enforced before parsing) and security headers."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)


class BodyLimit:
    """Refuse bodies larger than `max_bytes` with 413 problem+json, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    def _limit(self, path: str) -> int:
        for prefix, limit in self.overrides.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _reject(scope, send, limit)
                    return
        received = 0
        exceeded = started = False

        async def limited() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # FastAPI turns the aborted read into its own 400; the answer is 413 (below)
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except _TooLarge:
            pass
        if exceeded and not started:
            await _reject(scope, send, limit)


class _TooLarge(Exception):
    pass


async def _reject(scope: Scope, send: Send, limit: int) -> None:
    path = scope.get("path", "")
    body: dict[str, Any]
    if path.startswith("/fhir/"):
        media = "application/fhir+json"
        body = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "too-costly", "diagnostics": f"body exceeds {limit} bytes"}
            ],
        }
    else:
        media = "application/problem+json"
        body = {
            "type": "https://telecare.dev/problems/payload_too_large",
            "title": "Payload too large",
            "status": 413,
            "code": "payload_too_large",
            "detail": f"The body exceeds {limit} bytes.",
            "instance": path,
            "errors": [{"field": "body", "detail": f"at most {limit} bytes"}],
        }
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", media.encode()), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"permissions-policy", b"camera=(self), microphone=(self), geolocation=()"),
                ]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", CSP.encode()))
                if b"cache-control" not in names and not scope.get("path", "").startswith("/static/"):
                    extra.append((b"cache-control", b"no-store"))
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)
