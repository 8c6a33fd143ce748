"""Live routes: the waiting-room and queue WebSockets, the signaling WebSocket, ICE servers, invitations.

WebSockets authenticate with the same session cookie as the pages (or a guest cookie from a redeemed
invitation, or a bearer token for scripted clients) through `auth.sockets.SocketAuth`, their declared auth
dependency, and a `SocketGuard` re-checks the login and the visit's patient while they stay open.
A socket never holds a database transaction open: each step opens a short unit of work (SQLite transactions
take the write lock). Live updates come from `app.state.events`, so they reach sockets on every worker when
the database is PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket, WebSocketException
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocketDisconnect, WebSocketState

from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import (
    DbSession,
    auth_dependency,
    check_csrf,
)
from telecare.auth.principal import Principal
from telecare.auth.sockets import (
    POLICY_VIOLATION,
    SIGNED_OUT,
    GuestCookie,
    SocketAuth,
    SocketCaller,
    SocketGuard,
    close_with,
)
from telecare.core.crypto import new_token
from telecare.core.db import Database
from telecare.core.errors import AppError, NotAuthenticated, NotFound
from telecare.core.events import EventBus
from telecare.identity.models import CLINICAL_ROLES
from telecare.scheduling.models import Appointment, AppointmentStatus, Modality
from telecare.visits import service as visits
from telecare.visits.live import ice, invitations
from telecare.visits.live.invitations import GUEST_COOKIE, MAX_PARTICIPANTS, Guest
from telecare.visits.live.signaling import (
    BadMessage,
    Bye,
    Candidate,
    Connected,
    Description,
    ModalityRequest,
    TokenBucket,
    envelope,
    open_envelope,
    parse,
    relayed,
    room_topic,
)
from telecare.visits.models import ParticipantRole, VisitParticipant

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


# ---- the patient's waiting room (and a guest's) -----------------------------------------------------


def _status_message(status: str, modality: str, **extra: Any) -> dict[str, Any]:
    return {"type": "status", "status": status, "modality": modality, **extra}


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _visit_status(
    session: AsyncSession, caller: LiveCaller, appointment_id: int
) -> tuple[dict[str, Any], int]:
    """Authorise the caller for this visit and return its status and its patient's id. The patient's first
    connection moves a checked-in visit into the waiting room."""
    if caller.guest is not None:
        if caller.guest.appointment_id != appointment_id:
            raise _Refused("Not your visit.")
        appt = await session.get(Appointment, appointment_id)
        assert appt is not None
        ok, reason = await invitations.guest_may_join(session, caller.guest)
        message = _status_message(str(appt.status), str(appt.modality), can_join=ok, reason=reason)
        return message, appt.patient_id
    assert caller.principal is not None
    try:
        decision = await visits.can_join(session, caller.principal, appointment_id=appointment_id)
    except NotFound:
        raise _Refused("No such visit.") from None
    if decision.role is None or decision.appointment is None:
        raise _Refused(decision.reason or "Not your visit.")
    appt = decision.appointment
    if (
        decision.role is ParticipantRole.PATIENT
        and decision.allowed
        and appt.status == AppointmentStatus.CHECKED_IN
    ):
        appt = await visits.enter_waiting_room(session, caller.principal, appointment_id=appointment_id)
    message = _status_message(
        str(appt.status), str(appt.modality), can_join=decision.allowed, reason=decision.reason
    )
    return message, appt.patient_id


@router.websocket("/ws/visits/{appointment_id}/status")
async def visit_status_socket(websocket: WebSocket, appointment_id: int, caller: WatchCaller) -> None:
    """Live status of one visit for its patient (entering the waiting room), its clinician and its guests:
    waiting, admitted (in progress), modality, ended. Closes once the login is gone (4401) or the visit's
    patient is out of the caller's reach (4403)."""
    app = websocket.app
    bus: EventBus = app.state.events
    async with bus.subscribe(f"visit.{appointment_id}") as queue:
        try:
            async with live_unit_of_work(app) as session:
                first, patient_id = await _visit_status(session, caller, appointment_id)
        except (_Refused, AppError) as exc:
            reason = exc.reason if isinstance(exc, _Refused) else str(exc)
            raise WebSocketException(code=POLICY_VIOLATION, reason=reason[:120]) from None
        await websocket.accept()
        await websocket.send_json(first)

        async def render(event: dict[str, Any]) -> dict[str, Any] | None:
            if "change" not in event:
                return {}
            async with live_unit_of_work(app) as session:
                try:
                    message, _ = await _visit_status(session, caller, appointment_id)
                except _Refused:
                    return None
            message["change"] = event["change"]
            return message

        guard = SocketGuard(
            websocket, WATCH_SOCKET, caller, resource=Resource.VISIT, patients=lambda: {patient_id}
        )
        await _push(websocket, queue, render, guard)


async def _push(
    websocket: WebSocket,
    queue: asyncio.Queue[dict[str, Any]],
    render: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]],
    guard: SocketGuard[Guest],
) -> None:
    """Forward bus events to the client as freshly rendered messages (`{}` skips one, None ends the
    socket) until the client leaves or the guard ends the socket (with its close code)."""
    receiver = asyncio.create_task(_drain(websocket))
    guarding = asyncio.create_task(guard.run())
    code = 1000
    try:
        while not receiver.done():
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, receiver, guarding}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if guarding in done:
                    code = guarding.result()
                return
            message = await render(getter.result())
            if message is None:
                return
            if message:
                await websocket.send_json(message)
    except WebSocketDisconnect:
        return
    finally:
        receiver.cancel()
        guarding.cancel()
        await close_with(websocket, code)


async def _drain(websocket: WebSocket) -> None:
    """Read and ignore client frames until the socket closes (status sockets are one-way)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


# ---- the clinician's queue --------------------------------------------------------------------------


async def _queue_message(session: AsyncSession, principal: Principal) -> tuple[dict[str, Any], set[int]]:
    """The queue message and the patients it names."""
    entries = await visits.clinician_queue(session, principal)
    message = {
        "type": "queue",
        "entries": [
            {
                "appointment_id": e.appointment.id,
                "patient": e.patient_name,
                "status": str(e.appointment.status),
                "modality": str(e.appointment.modality),
                "start_at": e.appointment.start_at.isoformat(),
                "waiting_since": e.waiting_since.isoformat() if e.waiting_since else None,
                "attested_state": e.attested_state,
            }
            for e in entries
        ],
    }
    return message, {e.appointment.patient_id for e in entries}


@router.websocket("/ws/visits/queue")
async def queue_socket(websocket: WebSocket, caller: QueueCaller) -> None:
    """The clinician's waiting room: checked-in and waiting patients with wait time and attested state,
    pushed again whenever one of the clinician's visits changes, or when a patient in it goes out of the
    clinician's reach. Closes (4401) once the login is gone."""
    principal = caller.principal
    if principal is None or principal.practitioner_id is None:
        raise WebSocketException(code=POLICY_VIOLATION, reason="Only clinicians have a queue.")
    app = websocket.app
    bus: EventBus = app.state.events
    async with bus.subscribe(f"visits.practitioner.{principal.practitioner_id}") as queue:
        async with live_unit_of_work(app) as session:
            first, shown = await _queue_message(session, principal)
        await websocket.accept()
        await websocket.send_json(first)

        async def render(_event: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal shown
            await asyncio.sleep(0.05)  # coalesce a burst of changes into one refresh
            while not queue.empty():
                queue.get_nowait()
            async with live_unit_of_work(app) as session:
                message, shown = await _queue_message(session, principal)
            return message

        async def refresh(_lost: set[int]) -> None:
            # Rendered again through the policy, the queue no longer names them.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait({"recheck": True})

        guard = SocketGuard(
            websocket,
            QUEUE_SOCKET,
            caller,
            resource=Resource.VISIT,
            action=Action.SEARCH,  # the queue is a search of the clinician's visits (clinician_queue)
            patients=lambda: shown,
            on_lost=refresh,
        )
        await _push(websocket, queue, render, guard)


# ---- signaling --------------------------------------------------------------------------------------

# Sockets per visit on this worker: a second line of defence behind the four-participant invitation limit.
_local_rooms: dict[int, dict[str, str]] = defaultdict(dict)


@dataclass(frozen=True)
class _Admission:
    role: str
    modality: str
    marked_connected: bool
    patient_id: int


async def _admit_to_room(session: AsyncSession, caller: LiveCaller, appointment_id: int) -> _Admission:
    """The signaling room opens once the clinician has admitted the patient (`in_progress`), for the visit's
    patient, its clinician and its invited guests, and never while the licensure gate blocks it. A
    participant coming back after a drop is recorded as a reconnection."""
    if caller.guest is not None:
        guest = caller.guest
        if guest.appointment_id != appointment_id:
            raise _Refused("Not your visit.")
        ok, reason = await invitations.guest_may_join(session, guest)
        if not ok:
            raise _Refused(reason or "Not now.")
        appt = await session.get(Appointment, appointment_id)
        assert appt is not None
        await invitations.record_guest_presence(session, guest, joined=True)
        return _Admission(str(guest.role), str(appt.modality), True, appt.patient_id)
    principal = caller.principal
    assert principal is not None
    try:
        decision = await visits.may_enter_room(session, principal, appointment_id=appointment_id)
    except NotFound:
        raise _Refused("No such visit.") from None
    if not decision.allowed or decision.role is None or decision.appointment is None:
        raise _Refused(decision.reason or "Not your visit.")
    appt = decision.appointment
    row = (
        await session.execute(
            select(VisitParticipant).where(
                VisitParticipant.appointment_id == appointment_id,
                VisitParticipant.user_id == principal.user_id,
                VisitParticipant.role == str(decision.role),
            )
        )
    ).scalar_one_or_none()
    if row is not None and row.joined_at is not None and row.left_at is not None:
        await visits.record_reconnect(session, principal, appointment_id=appointment_id)
    marked = row is not None and row.joined_at is not None
    return _Admission(str(decision.role), str(appt.modality), marked, appt.patient_id)


class _Socket:
    """One participant's signaling connection."""

    def __init__(self, websocket: WebSocket, caller: LiveCaller, appointment_id: int, admission: _Admission):
        self.ws = websocket
        self.app: FastAPI = websocket.app
        self.bus: EventBus = websocket.app.state.events
        self.caller = caller
        self.peer = caller.peer_id
        self.appointment_id = appointment_id
        self.role = admission.role
        self.conn = new_token(9)
        self.marked_connected = admission.marked_connected
        self.topic = room_topic(appointment_id)
        self.lock = asyncio.Lock()
        self.bucket = TokenBucket()
        self.violations = 0
        self.outcome = "dropped"
        self.close_code = SIGNED_OUT

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_json(message)

    async def emit(self, message: dict[str, Any], to: str | None = None) -> None:
        packed = envelope(
            sender=self.peer, conn=self.conn, to=to, message=message, compress=self.bus.uses_postgres
        )
        await self.bus.emit(self.topic, packed)

    def presence(self, kind: str) -> dict[str, Any]:
        return {"type": kind, "role": self.role, "name": self.caller.display_name}

    # client -> room
    async def read(self) -> None:
        while True:
            frame = await self.ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            data = frame.get("text")
            if data is None:
                data = frame.get("bytes") or b""
            if not self.bucket.take(time.monotonic()):
                self.violations += 1
                await self.send({"type": "error", "code": "rate_limited", "detail": "Too many messages."})
                if self.violations > MAX_RATE_VIOLATIONS:
                    self.outcome = "flooding"
                    return
                continue
            try:
                message = parse(data)
            except BadMessage as exc:
                await self.send({"type": "error", "code": exc.code, "detail": exc.detail})
                continue
            if isinstance(message, Description | Candidate):
                try:
                    await self.emit(relayed(message), to=message.to)
                except ValueError:
                    await self.send({"type": "error", "code": "too_large", "detail": "Message too large."})
                except Exception as exc:  # the bus (PostgreSQL) is unreachable: tell the sender
                    log.warning("signaling relay failed: %s", type(exc).__name__)
                    await self.send({"type": "error", "code": "relay_unavailable", "detail": "Try again."})
            elif isinstance(message, Bye):
                self.outcome = "bye"
                return
            elif isinstance(message, ModalityRequest):
                await self.switch(message)
            elif isinstance(message, Connected):
                await self.connected()

    async def switch(self, message: ModalityRequest) -> None:
        principal = self.caller.principal
        if principal is None:
            await self.send({"type": "error", "code": "forbidden", "detail": "Guests cannot switch."})
            return
        try:
            async with live_unit_of_work(self.app) as session:
                await visits.switch_modality(
                    session,
                    principal,
                    appointment_id=self.appointment_id,
                    to_modality=Modality(message.modality),
                    reason=message.reason,
                )
        except AppError as exc:
            await self.send({"type": "error", "code": exc.code, "detail": str(exc)})
        # Success reaches every participant (this one included) as a `modality` event from visit.<id>.

    async def connected(self) -> None:
        if self.marked_connected or self.caller.principal is None:
            return
        self.marked_connected = True
        with contextlib.suppress(AppError):
            async with live_unit_of_work(self.app) as session:
                await visits.mark_connected(
                    session, self.caller.principal, appointment_id=self.appointment_id
                )

    # room -> client
    async def write(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            payload = await queue.get()
            message = open_envelope(payload)
            if message is None:
                if await self.visit_changed(payload):
                    return
                continue
            sender = payload["from"]
            if sender == self.peer:
                if message.get("type") == "join" and payload["conn"] != self.conn:
                    await self.send({"type": "replaced"})
                    self.outcome = "replaced"
                    return
                continue
            if payload.get("to") not in (None, self.peer):
                continue
            out = {**message, "from": sender}
            if message.get("type") in ("join", "peer", "leave"):
                out["conn"] = payload["conn"]
            if message.get("type") == "join":
                # Tell the newcomer who is already here.
                await self.emit(self.presence("peer"), to=sender)
            await self.send(out)

    async def visit_changed(self, payload: dict[str, Any]) -> bool:
        status = payload.get("status")
        if payload.get("change") == "modality_changed":
            await self.send({"type": "modality", "modality": payload.get("modality")})
        if status in (AppointmentStatus.COMPLETED, AppointmentStatus.CANCELLED, AppointmentStatus.NOSHOW):
            await self.send({"type": "ended", "status": status})
            self.outcome = "ended"
            return True
        return False

    async def watch(self, guard: SocketGuard[Guest]) -> None:
        """Re-check the login (signed out, disabled, timed out, invitation expired) and the caller's reach
        to the visit's patient while the call lasts (`auth.sockets.SocketGuard`)."""
        self.close_code = await guard.run()
        self.outcome = "revoked"

    async def record_leave(self) -> None:
        if self.outcome in ("replaced", "ended"):
            return
        with contextlib.suppress(AppError):
            async with live_unit_of_work(self.app) as session:
                if self.caller.guest is not None:
                    await invitations.record_guest_presence(session, self.caller.guest, joined=False)
                elif self.caller.principal is not None:
                    await visits.record_disconnect(
                        session, self.caller.principal, appointment_id=self.appointment_id
                    )


@router.websocket("/ws/visits/{appointment_id}/signal")
async def signal_socket(websocket: WebSocket, appointment_id: int, caller: SignalCaller) -> None:
    """WebRTC signaling for one visit. Client messages: `offer`/`answer` (`to`, `sdp`), `candidate` (`to`,
    `candidate`), `modality` (`modality`, `reason`), `connected`, `bye`. Server messages: `welcome`,
    `join` (a newcomer: offer to it when your peer id sorts first), `peer` (already present), `leave`,
    relayed `offer`/`answer`/`candidate` with `from`, `modality`, `ended`, `replaced`, `error`."""
    app = websocket.app
    room = _local_rooms[appointment_id]
    if len(room) >= MAX_PARTICIPANTS and caller.peer_id not in room:
        raise WebSocketException(code=TRY_AGAIN_LATER, reason="The visit is full.")
    try:
        async with live_unit_of_work(app) as session:
            admission = await _admit_to_room(session, caller, appointment_id)
    except (_Refused, AppError) as exc:
        reason = exc.reason if isinstance(exc, _Refused) else str(exc)
        raise WebSocketException(code=POLICY_VIOLATION, reason=reason[:120]) from None
    sock = _Socket(websocket, caller, appointment_id, admission)
    guard = SocketGuard(
        websocket, LIVE_SOCKET, caller, resource=Resource.VISIT, patients=lambda: {admission.patient_id}
    )
    async with sock.bus.subscribe(sock.topic, f"visit.{appointment_id}") as queue:
        await websocket.accept()
        room[sock.peer] = sock.conn
        tasks: set[asyncio.Task[None]] = set()
        try:
            await sock.send(
                {
                    "type": "welcome",
                    "self": sock.peer,
                    "conn": sock.conn,
                    "role": sock.role,
                    "modality": admission.modality,
                }
            )
            await sock.emit(sock.presence("join"))
            tasks = {
                asyncio.create_task(sock.read()),
                asyncio.create_task(sock.write(queue)),
                asyncio.create_task(sock.watch(guard)),
            }
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None and not isinstance(task.exception(), WebSocketDisconnect):
                    log.warning("signaling socket ended by %s", type(task.exception()).__name__)
        finally:
            for task in tasks:
                task.cancel()
            if room.get(sock.peer) == sock.conn:
                room.pop(sock.peer, None)
            if not room:
                _local_rooms.pop(appointment_id, None)
            # Record first, then tell the others: a quick rejoin then finds the drop already recorded.
            await sock.record_leave()
            with contextlib.suppress(Exception):
                await sock.emit({"type": "leave", "role": sock.role})
            with contextlib.suppress(Exception):
                if websocket.application_state is WebSocketState.CONNECTED:
                    code = {
                        "replaced": REPLACED,
                        "flooding": POLICY_VIOLATION,
                        "revoked": sock.close_code,
                    }.get(sock.outcome, 1000)
                    await websocket.close(code=code)
