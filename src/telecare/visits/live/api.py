"""Live visits: who is calling (sessions, tokens and guests, for pages and sockets), ICE servers and
invitations. The waiting-room and queue sockets are in rooms.py, the signaling socket in call.py.

WebSockets authenticate with the same session cookie as the pages (or a guest cookie from a redeemed
invitation, or a bearer token for scripted clients) through `auth.sockets.SocketAuth`, their declared auth
dependency, and a `SocketGuard` re-checks the login and the visit's patient while they stay open.
A socket never holds a database transaction open: each step opens a short unit of work (SQLite transactions
take the write lock). Live updates come from `app.state.events`, so they reach sockets on every worker when
the database is PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.auth.dependencies import (
    DbSession,
    auth_dependency,
    check_csrf,
)
from telecare.auth.sockets import (
    GuestCookie,
    SocketAuth,
    SocketCaller,
)
from telecare.core.db import Database
from telecare.core.errors import NotAuthenticated, NotFound
from telecare.identity.models import CLINICAL_ROLES
from telecare.visits.live import ice, invitations
from telecare.visits.live.invitations import GUEST_COOKIE, Guest
from telecare.visits.models import ParticipantRole

log = logging.getLogger(__name__)
router = APIRouter(tags=["visits-live"])

TRY_AGAIN_LATER = 1013
REPLACED = 4000  # the same participant connected again (reconnect from another tab or network)
MAX_RATE_VIOLATIONS = 20


# ---- who is calling ----------------------------------------------------------------------------------

LiveCaller = SocketCaller[Guest]
"""A signed-in user or an invited guest."""

# Any role: each socket then asks the visit service whether the caller is in this visit.
LIVE_SOCKET: SocketAuth[Guest] = SocketAuth(
    guests=GuestCookie(GUEST_COOKIE, invitations.guest_from_cookie), keep_alive=True
)
# Status and queue sockets are watched, not used: they do not keep a session alive past its idle limit.
WATCH_SOCKET: SocketAuth[Guest] = SocketAuth(guests=GuestCookie(GUEST_COOKIE, invitations.guest_from_cookie))
QUEUE_SOCKET: SocketAuth[Guest] = SocketAuth(*CLINICAL_ROLES)


@contextlib.asynccontextmanager
async def live_unit_of_work(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A short transaction for one socket step. Live events published inside it go out after commit, and
    denied-access audit rows queued inside it are written even when it rolls back."""
    db: Database = app.state.db
    async with db.unit_of_work() as session:
        yield session


@auth_dependency
async def http_caller(request: Request, session: DbSession) -> LiveCaller:
    """HTTP authentication for pages and endpoints guests also use (call page, ICE servers): the sockets'
    rules (`auth.sockets`), so a page and its socket admit the same people."""
    caller = await LIVE_SOCKET.resolve(request, session)
    if caller is None:
        raise NotAuthenticated()
    if caller.principal is not None:
        # A cookie-authenticated write needs the CSRF token, as on every other route.
        await check_csrf(request, caller.principal)
        request.state.principal = caller.principal
    return caller


SignalCaller = Annotated[LiveCaller, Depends(LIVE_SOCKET.dependency())]
WatchCaller = Annotated[LiveCaller, Depends(WATCH_SOCKET.dependency())]
QueueCaller = Annotated[LiveCaller, Depends(QUEUE_SOCKET.dependency())]
HttpCaller = Annotated[LiveCaller, Depends(http_caller)]


class Refused(Exception):
    """A live step refused (the reason goes to the client in its close frame or message)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _user_tag(caller: LiveCaller) -> str:
    return caller.peer_id  # no names in TURN usernames (they show up in TURN server logs)


# ---- REST --------------------------------------------------------------------------------------------


@router.get("/api/v1/visits/ice-servers")
async def ice_servers(request: Request, caller: HttpCaller) -> dict[str, Any]:
    """STUN/TURN servers for `RTCPeerConnection`, with short-lived TURN credentials (TURN REST scheme)."""
    return ice.ice_servers(request.app.state.settings, _user_tag(caller))


class InvitationCreate(BaseModel):
    role: ParticipantRole
    display_name: str = Field(min_length=1, max_length=120)


@router.post("/api/v1/visits/{appointment_id}/invitations", status_code=201)
async def invite(
    request: Request,
    appointment_id: int,
    body: InvitationCreate,
    session: DbSession,
    caller: HttpCaller,
) -> dict[str, Any]:
    """Invite an interpreter or a caregiver: a one-time link, valid until the visit is over. The link is in
    this response only."""
    if caller.principal is None:
        raise NotFound()
    guest, token = await invitations.invite_guest(
        session,
        caller.principal,
        appointment_id=appointment_id,
        role=body.role,
        display_name=body.display_name,
    )
    base = str(request.app.state.settings.base_url).rstrip("/")
    assert guest.invite_expires_at is not None
    return {
        "participant_id": guest.id,
        "role": str(guest.role),
        "url": f"{base}/join/{token}",
        "expires_at": guest.invite_expires_at.isoformat(),
    }
