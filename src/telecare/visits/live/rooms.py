"""The waiting room's status socket (patient and guests) and the clinician's queue socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketException
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocketDisconnect

from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.auth.sockets import (
    POLICY_VIOLATION,
    SocketGuard,
    close_with,
)
from telecare.core.errors import AppError, NotFound
from telecare.core.events import EventBus
from telecare.scheduling.models import Appointment, AppointmentStatus
from telecare.visits import service as visits
from telecare.visits.live import invitations
from telecare.visits.live.api import (
    QUEUE_SOCKET,
    WATCH_SOCKET,
    LiveCaller,
    QueueCaller,
    Refused,
    WatchCaller,
    live_unit_of_work,
)
from telecare.visits.live.invitations import Guest
from telecare.visits.models import ParticipantRole

log = logging.getLogger(__name__)
router = APIRouter(tags=["visits-live"])


# ---- the patient's waiting room (and a guest's) -----------------------------------------------------


def _status_message(status: str, modality: str, **extra: Any) -> dict[str, Any]:
    return {"type": "status", "status": status, "modality": modality, **extra}


async def _visit_status(
    session: AsyncSession, caller: LiveCaller, appointment_id: int
) -> tuple[dict[str, Any], int]:
    """Authorise the caller for this visit and return its status and its patient's id. The patient's first
    connection moves a checked-in visit into the waiting room."""
    if caller.guest is not None:
        if caller.guest.appointment_id != appointment_id:
            raise Refused("Not your visit.")
        appt = await session.get(Appointment, appointment_id)
        assert appt is not None
        ok, reason = await invitations.guest_may_join(session, caller.guest)
        message = _status_message(str(appt.status), str(appt.modality), can_join=ok, reason=reason)
        return message, appt.patient_id
    assert caller.principal is not None
    try:
        decision = await visits.can_join(session, caller.principal, appointment_id=appointment_id)
    except NotFound:
        raise Refused("No such visit.") from None
    if decision.role is None or decision.appointment is None:
        raise Refused(decision.reason or "Not your visit.")
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
        except (Refused, AppError) as exc:
            reason = exc.reason if isinstance(exc, Refused) else str(exc)
            raise WebSocketException(code=POLICY_VIOLATION, reason=reason[:120]) from None
        await websocket.accept()
        await websocket.send_json(first)

        async def render(event: dict[str, Any]) -> dict[str, Any] | None:
            if "change" not in event:
                return {}
            async with live_unit_of_work(app) as session:
                try:
                    message, _ = await _visit_status(session, caller, appointment_id)
                except Refused:
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
