"""The call's signaling socket: admission to the room, relaying offers, answers and ICE candidates
between participants, modality changes, presence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket, WebSocketException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocketDisconnect, WebSocketState

from telecare.access.policy import Resource
from telecare.auth.sockets import (
    POLICY_VIOLATION,
    SIGNED_OUT,
    SocketGuard,
)
from telecare.core.crypto import new_token
from telecare.core.errors import AppError, NotFound
from telecare.core.events import EventBus
from telecare.scheduling.models import Appointment, AppointmentStatus, Modality
from telecare.visits import service as visits
from telecare.visits.live import invitations
from telecare.visits.live.api import (
    LIVE_SOCKET,
    MAX_RATE_VIOLATIONS,
    REPLACED,
    TRY_AGAIN_LATER,
    LiveCaller,
    Refused,
    SignalCaller,
    live_unit_of_work,
)
from telecare.visits.live.invitations import MAX_PARTICIPANTS, Guest
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
from telecare.visits.models import VisitParticipant

log = logging.getLogger(__name__)
router = APIRouter(tags=["visits-live"])


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
            raise Refused("Not your visit.")
        ok, reason = await invitations.guest_may_join(session, guest)
        if not ok:
            raise Refused(reason or "Not now.")
        appt = await session.get(Appointment, appointment_id)
        assert appt is not None
        await invitations.record_guest_presence(session, guest, joined=True)
        return _Admission(str(guest.role), str(appt.modality), True, appt.patient_id)
    principal = caller.principal
    assert principal is not None
    try:
        decision = await visits.may_enter_room(session, principal, appointment_id=appointment_id)
    except NotFound:
        raise Refused("No such visit.") from None
    if not decision.allowed or decision.role is None or decision.appointment is None:
        raise Refused(decision.reason or "Not your visit.")
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
    except (Refused, AppError) as exc:
        reason = exc.reason if isinstance(exc, Refused) else str(exc)
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
