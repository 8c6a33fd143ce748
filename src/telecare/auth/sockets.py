"""WebSocket authentication and the guard that keeps re-checking an open socket.

Every socket declares `SocketAuth(...)`: the same credentials and rules as HTTP (`auth.dependencies`): a
bearer token, else the web session cookie (staff must have completed TOTP), else, where the socket's domain
accepts one, a guest grant (an invited interpreter's cookie). A browser always sends Origin on the
handshake, so an Origin that is not ours is refused before any credential is read (cross-site WebSocket
hijacking); scripted clients without Origin still need a credential. Refusals happen at the handshake
(HTTP 403).

A socket lives for hours, so being let in once is not enough. `SocketGuard` re-resolves the credential and
re-checks every patient the socket streams through the access policy (`access.service.still_reachable`,
the scope HTTP reads start from) whenever an `auth.revoked` event names the caller (sign-out, disabled
user, revoked token, care-team removal: `auth.sessions.publish_revoked`, after commit, across workers
through the event bus), when a break-the-glass grant it depends on expires, and every
`socket_recheck_seconds` in any case (a revocation from a process without a bus, a visit relationship that
ended). A socket whose credential is gone closes with 4401; a patient out of reach is dropped, or the
socket closes with 4403 when that patient is what it is about."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from fastapi import WebSocket, WebSocketException
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth import sessions
from telecare.auth.dependencies import auth_dependency, client_addr, resolve_principal
from telecare.auth.principal import Principal
from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.errors import AppError
from telecare.core.time import utc_now
from telecare.identity.models import Role

POLICY_VIOLATION = 1008  # RFC 6455 7.4.1: refused at the handshake (HTTP 403)
SIGNED_OUT = 4401  # the credential is gone: signed out, disabled, token revoked, session or grant expired
NO_LONGER_PERMITTED = 4403  # the socket's patient is out of the caller's reach now


class GuestGrant(Protocol):
    """A grant to one visit for somebody without an account (the visits domain's `Guest`)."""

    @property
    def participant_id(self) -> int: ...

    @property
    def display_name(self) -> str: ...


G = TypeVar("G", bound=GuestGrant)
GuestResolver = Callable[[AsyncSession, Settings, str, str | None], Awaitable[G | None]]


@dataclass(frozen=True)
class GuestCookie(Generic[G]):
    """How a domain's guest grant travels: the cookie's name and the function that resolves it (None when
    the grant is unknown, used up or expired)."""

    name: str
    resolve: GuestResolver[G]


@dataclass(frozen=True)
class SocketCaller(Generic[G]):
    """Who is on the other end of a socket: a principal (session or token) or a guest."""

    principal: Principal | None = None
    guest: G | None = None

    @property
    def peer_id(self) -> str:
        """A stable id without a name in it: `u<user id>` or `g<participant id>`."""
        if self.principal is not None:
            return f"u{self.principal.user_id}"
        assert self.guest is not None
        return f"g{self.guest.participant_id}"

    @property
    def display_name(self) -> str:
        if self.principal is not None:
            return self.principal.display_name
        assert self.guest is not None
        return self.guest.display_name

    def same_caller(self, other: SocketCaller[G] | None) -> bool:
        return other is not None and other.peer_id == self.peer_id

    def named_by(self, event: dict[str, Any]) -> bool:
        """Whether an `auth.revoked` event may concern this caller."""
        if self.principal is not None:
            p = self.principal
            return event.get("user_id") == p.user_id or (
                p.session_id is not None and event.get("session_id") == p.session_id
            )
        return self.guest is not None and event.get("participant_id") == self.guest.participant_id


def same_origin(conn: HTTPConnection) -> bool:
    """No Origin (a scripted client), or the Origin is this server (its Host or the configured base URL)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    settings: Settings = conn.app.state.settings
    return urlsplit(origin).netloc in {conn.headers.get("host", ""), urlsplit(settings.base_url).netloc}


class SocketAuth(Generic[G]):
    """The authentication rules of one kind of socket: which roles it admits and whether it takes a guest
    grant. `dependency()` is the socket route's declared auth dependency; `resolve` is the guard's re-check.

    `keep_alive` says whether an open socket counts as activity for the idle timeout: a call does (the
    people in it are busy), a dashboard left open does not, so its session still idles out."""

    def __init__(
        self,
        *roles: Role,
        guests: GuestCookie[G] | None = None,
        keep_alive: bool = False,
    ) -> None:
        self.roles = frozenset(roles)
        self.guests = guests
        self.keep_alive = keep_alive

    async def resolve(
        self, conn: HTTPConnection, session: AsyncSession, *, touch: bool = True
    ) -> SocketCaller[G] | None:
        """The caller a handshake's credentials name, by HTTP's rules, or None."""
        addr = client_addr(conn)
        try:
            principal = await resolve_principal(conn, session, touch=touch)
        except AppError:
            return None  # a malformed or wrong bearer token
        if principal is not None:
            if principal.kind == "session" and principal.role.is_staff and not principal.mfa_verified:
                return None  # as `Authenticated()`: staff complete TOTP first
            if self.roles and principal.role not in self.roles:
                return None
            return SocketCaller(principal=principal)
        if self.guests is not None and (value := conn.cookies.get(self.guests.name)):
            settings: Settings = conn.app.state.settings
            guest = await self.guests.resolve(session, settings, value, addr)
            if guest is not None:
                return SocketCaller(guest=guest)
        return None

    def dependency(self) -> Callable[[WebSocket], Awaitable[SocketCaller[G]]]:
        """The FastAPI dependency a socket route declares; refuses the handshake (HTTP 403) without a
        caller this socket admits."""

        @auth_dependency
        async def socket_caller(websocket: WebSocket) -> SocketCaller[G]:
            if not same_origin(websocket):
                raise WebSocketException(code=POLICY_VIOLATION, reason="Cross-site WebSocket refused.")
            db: Database = websocket.app.state.db
            async with db.unit_of_work() as session:
                caller = await self.resolve(websocket, session)
            if caller is None:
                raise WebSocketException(code=POLICY_VIOLATION, reason="Sign in first.")
            return caller

        return socket_caller


LostPatients = Callable[[set[int]], Awaitable[None]]


class SocketGuard(Generic[G]):
    """Re-checks one open socket until its credential or its patient is gone; `run()` then returns the
    close code. `patients()` names the patients the socket streams right now, checked for `resource`.
    `on_lost(ids)` stops streaming those (drop them from a worklist, refresh a queue); without it, losing
    any patient ends the socket (a visit's status is about its one patient)."""

    def __init__(
        self,
        websocket: WebSocket,
        auth: SocketAuth[G],
        caller: SocketCaller[G],
        *,
        resource: Resource | None = None,
        action: Action = Action.READ,
        patients: Callable[[], Collection[int]] = frozenset,
        on_lost: LostPatients | None = None,
    ) -> None:
        self.websocket = websocket
        self.auth = auth
        self.caller = caller
        self.resource = resource
        self.action = action
        self.patients = patients
        self.on_lost = on_lost
        self.db: Database = websocket.app.state.db
        self.settings: Settings = websocket.app.state.settings
        self._checks: set[asyncio.Future[tuple[int | None, float]]] = set()

    async def check(self) -> tuple[int | None, float]:
        """One re-check in one short transaction: the close code when the socket must end (else None; lost
        patients are handed to `on_lost`), and the seconds until the next timed re-check: the interval, or
        sooner when a break-the-glass grant behind a streamed patient expires (nobody publishes an expiry)."""
        wait = float(self.settings.socket_recheck_seconds)
        expiry: datetime | None = None
        async with self.db.unit_of_work() as session:
            again = await self.auth.resolve(self.websocket, session, touch=self.auth.keep_alive)
            if not self.caller.same_caller(again):
                return SIGNED_OUT, wait
            assert again is not None
            streamed = set(self.patients())
            if again.principal is None or self.resource is None or not streamed:
                return None, wait
            reachable = await access.still_reachable(
                session, again.principal, streamed, resource=self.resource, action=self.action
            )
            if reachable:
                expiry = await access.next_break_glass_expiry(session, again.principal, reachable)
        if expiry is not None:
            wait = min(wait, max(0.0, (expiry - utc_now()).total_seconds()) + 0.05)
        lost = streamed - reachable
        if lost and self.on_lost is None:
            return NO_LONGER_PERMITTED, wait
        if lost:
            assert self.on_lost is not None
            await self.on_lost(lost)
        return None, wait

    async def run(self) -> int:
        """Re-check, then wait for a revocation naming the caller or the next timed re-check, repeat; return
        the close code once the socket must end. The first check runs once subscribed, so a revocation
        between the handshake and the subscription is not missed."""
        bus = self.websocket.app.state.events
        async with bus.subscribe(sessions.REVOKED_TOPIC) as events:
            while True:
                # Shielded: a socket that ends mid-check must not cancel the check inside its transaction
                # (a cancelled SQLite BEGIN IMMEDIATE can leave the write lock held by a lost connection).
                checking = asyncio.ensure_future(self.check())
                self._checks.add(checking)
                checking.add_done_callback(self._checks.discard)
                code, wait = await asyncio.shield(checking)
                if code is not None:
                    return code
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        while not self.caller.named_by(await events.get()):
                            pass


async def close_with(websocket: WebSocket, code: int) -> None:
    """Close a socket the guard ended (quietly when the client has already gone)."""
    from starlette.websockets import WebSocketState

    with contextlib.suppress(Exception):
        if websocket.application_state is WebSocketState.CONNECTED:
            await websocket.close(code=code)
