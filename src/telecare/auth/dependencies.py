"""The FastAPI dependencies every route declares (the caller itself is `auth.principal.Principal`).

A route declares exactly one of `Public`, `Authenticated(...)` (web session or API token) or a domain's own
authenticator built with `auth_dependency` (device keys, Nightscout secrets). The route-coverage test
fails on any route without one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from telecare.auth.principal import Principal
from telecare.config import Settings
from telecare.core.db import Database, UnitOfWork, as_uow
from telecare.core.errors import Forbidden, MfaRequired, NotAuthenticated
from telecare.identity.models import Role

__all__ = ["Principal"]  # re-exported for callers that declare routes

SESSION_COOKIE = "tc_session"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def settings_of(request: HTTPConnection) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def client_addr(request: HTTPConnection) -> str | None:
    settings = settings_of(request)
    peer = request.client.host if request.client else None
    if peer and peer in settings.trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
        return forwarded or peer
    return peer


READ_METHODS = frozenset({"GET", "HEAD"})


async def _db_session(request: Request) -> AsyncIterator[UnitOfWork]:
    """One unit of work per request; denied-access audit entries queued in it persist after a rollback.
    A GET or HEAD is read-only: it writes nothing but its audit entries (group-committed, durable before
    the answer leaves; core/db.py)."""
    db: Database = request.app.state.db
    async with db.unit_of_work(read_only=request.method in READ_METHODS) as uow:
        yield uow


def defer_independent_write(session: AsyncSession, job: Callable[[AsyncSession], Awaitable[None]]) -> None:
    """Queue a write that must persist even if the request's own transaction rolls back (denied-access
    audit entries). Runs in a fresh transaction after the request's unit of work has ended."""
    as_uow(session).after_rollback(job)


DbSession = Annotated[UnitOfWork, Depends(_db_session, scope="function")]

F = TypeVar("F", bound=Callable[..., Any])


def auth_dependency(fn: F) -> F:
    """Mark a dependency as an authentication declaration (checked by the route-coverage test)."""
    fn.__telecare_auth__ = True  # type: ignore[attr-defined]
    return fn


@auth_dependency
async def public() -> None:
    """Declares a route public (login page, static files, health)."""


public.__telecare_public__ = True  # type: ignore[attr-defined]


def same_origin(conn: HTTPConnection, origin: str) -> bool:
    """`origin` (an Origin header) names this server: the configured base URL or the Host it was reached
    at (which TrustedHostMiddleware has already checked against the allowed hosts)."""
    netloc = urlsplit(origin).netloc
    return netloc in {conn.headers.get("host", ""), urlsplit(conn.app.state.settings.base_url).netloc}


def has_credentials(request: Request) -> bool:
    """The request carries a bearer token or a session cookie (read by the error handlers)."""
    return bool(request.headers.get("authorization") or request.cookies.get(SESSION_COOKIE))


async def resolve_principal(
    request: HTTPConnection, session: AsyncSession, *, touch: bool = True
) -> Principal | None:
    """The bearer token's principal, else the session cookie's, else None; a malformed or wrong bearer
    token raises (it is not rescued by a cookie). HTTP requests and WebSocket handshakes both (a socket's
    re-check passes `touch=False` when it must not count as activity for the idle timeout)."""
    from telecare.auth import sessions as identity_sessions

    header = request.headers.get("authorization", "")
    addr = client_addr(request)
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticated(
                "Use 'Authorization: Bearer <token>'.", headers={"WWW-Authenticate": "Bearer"}
            )
        principal = await identity_sessions.principal_from_token(session, token.strip(), addr)
        if principal is None:
            raise NotAuthenticated(
                "The token is invalid, expired or revoked.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return await identity_sessions.principal_from_session(session, cookie, addr, touch=touch)
    return None


async def check_csrf(request: Request, principal: Principal) -> None:
    """Every cookie-authenticated write carries the session's CSRF token (header or form field)."""
    if principal.kind != "session" or request.method not in UNSAFE_METHODS:
        return
    supplied = request.headers.get(CSRF_HEADER)
    if supplied is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        supplied = value if isinstance(value, str) else None
    from telecare.core.crypto import constant_time_equal

    if (
        not supplied
        or principal.csrf_token is None
        or not constant_time_equal(supplied, principal.csrf_token)
    ):
        raise Forbidden("Missing or wrong CSRF token.")


def Authenticated(  # noqa: N802 - reads as a declaration on the route
    *roles: Role, allow_unverified_mfa: bool = False
) -> Any:
    """Dependency: a web session (CSRF-checked on unsafe methods) or a bearer token, optionally limited to
    roles. Staff sessions must have completed TOTP unless `allow_unverified_mfa` (the TOTP pages)."""

    @auth_dependency
    async def dependency(request: Request, session: DbSession) -> Principal:
        principal = await resolve_principal(request, session)
        if principal is None:
            raise NotAuthenticated(headers={"WWW-Authenticate": "Bearer"})  # RFC 9110 15.5.2
        if (
            principal.kind == "session"
            and principal.role.is_staff
            and not principal.mfa_verified
            and not allow_unverified_mfa
        ):
            raise MfaRequired("Complete two-factor verification first.")
        await check_csrf(request, principal)
        if roles and principal.role not in roles:
            raise Forbidden("Your role cannot use this operation.")
        request.state.principal = principal
        return principal

    return Depends(dependency)


CurrentPrincipal = Annotated[Principal, Authenticated()]
