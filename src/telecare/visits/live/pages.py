"""Pages of the real-time half of a visit: camera and microphone test, the patient's waiting room, the
clinician's live queue, the call, and the guest's invitation landing page. Their behaviour is in the ES
modules under /static/js/live/ (no inline scripts); the data a module needs is in `data-*` attributes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from telecare.access import rules
from telecare.access.policy import Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession, client_addr, public
from telecare.core.errors import AppError, Forbidden
from telecare.core.time import utc_now
from telecare.scheduling import service as scheduling
from telecare.scheduling.models import Appointment
from telecare.visits import service as visits
from telecare.visits.live import invitations
from telecare.visits.live.api import HttpCaller
from telecare.visits.models import ModalityChangeReason
from telecare.web.templating import templates

router = APIRouter(include_in_schema=False)
PublicRoute = Depends(public)

AUDIO_REASONS = [
    (ModalityChangeReason.PATIENT_LACKS_VIDEO, "Patient has no working video"),
    (ModalityChangeReason.PATIENT_DECLINED_VIDEO, "Patient declined video"),
    (ModalityChangeReason.CONNECTION_QUALITY, "Connection quality"),
]


def _page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)


@router.get("/visits/{appointment_id}/device-test", response_class=HTMLResponse)
async def device_test(request: Request, appointment_id: int, caller: HttpCaller) -> Response:
    """Own camera preview and microphone level before entering the visit."""
    if caller.guest is not None and caller.guest.appointment_id != appointment_id:
        raise Forbidden("Not your visit.")
    return _page(
        request,
        "live/device_test.html",
        principal=caller.principal,
        appointment_id=appointment_id,
        next_url=f"/visits/{appointment_id}/waiting",
    )


@router.get("/visits/{appointment_id}/waiting", response_class=HTMLResponse)
async def waiting_room(
    request: Request, appointment_id: int, session: DbSession, caller: HttpCaller
) -> Response:
    """The patient's (or a guest's) virtual waiting room: live status until the clinician admits them."""
    if caller.guest is not None:
        if caller.guest.appointment_id != appointment_id:
            raise Forbidden("Not your visit.")
        appt = await session.get(Appointment, appointment_id)
    else:
        assert caller.principal is not None
        appt = await scheduling.load_appointment(
            session, caller.principal, appointment_id, resource=Resource.VISIT
        )
    assert appt is not None
    block = (
        visits.patient_block_message(appt.licensure_block_state or "")
        if appt.licensure_blocked_at is not None
        else None
    )
    return _page(
        request,
        "live/waiting.html",
        principal=caller.principal,
        guest=caller.guest,
        appt=appt,
        block_message=block,
    )


@router.get("/clinic/queue", response_class=HTMLResponse)
async def clinician_queue(request: Request, principal: CurrentPrincipal) -> Response:
    """The clinician's live waiting room: patients, wait time, attested state, Admit."""
    if not rules.has_clinical_role(principal):
        raise Forbidden("Only clinicians have a waiting-room queue.")
    return _page(request, "live/queue.html", principal=principal)


@router.get("/visits/{appointment_id}/call", response_class=HTMLResponse)
async def call(request: Request, appointment_id: int, session: DbSession, caller: HttpCaller) -> Response:
    """The video (or audio-only) call. Joining is decided by the signaling server."""
    role = "guest"
    if caller.guest is not None:
        if caller.guest.appointment_id != appointment_id:
            raise Forbidden("Not your visit.")
        appt = await session.get(Appointment, appointment_id)
        assert appt is not None
        allowed, reason = await invitations.guest_may_join(session, caller.guest)
        role = str(caller.guest.role)
    else:
        assert caller.principal is not None
        decision = await visits.may_enter_room(session, caller.principal, appointment_id=appointment_id)
        appt = decision.appointment
        assert appt is not None
        allowed, reason = decision.allowed, decision.reason
        role = str(decision.role) if decision.role else "none"
    return _page(
        request,
        "live/call.html",
        status_code=200 if allowed else 403,
        principal=caller.principal,
        guest=caller.guest,
        appt=appt,
        allowed=allowed,
        reason=reason,
        role=role,
        audio_reasons=AUDIO_REASONS,
    )


@router.get("/join/{token}", response_class=HTMLResponse, dependencies=[PublicRoute])
async def invitation_landing(request: Request, token: str) -> Response:
    """An invitation link: nothing is used up until the guest presses Join (link previews are harmless)."""
    return _page(request, "live/join.html", principal=None, token=token, error=None)


@router.post("/join/{token}", response_class=HTMLResponse, dependencies=[PublicRoute])
async def redeem(request: Request, token: str, session: DbSession) -> Response:
    """Redeem the one-time link: the browser gets a guest cookie for this visit only."""
    if len(token) > 100:
        return _page(request, "live/join.html", 403, principal=None, token="", error="Invalid link.")
    try:
        async with session.begin_nested():
            guest = await invitations.redeem_invitation(
                session, token=token, client_addr=client_addr(request)
            )
    except AppError as exc:
        return _page(
            request, "live/join.html", exc.status_code, principal=None, token=token, error=exc.detail
        )
    settings = request.app.state.settings
    response = RedirectResponse(f"/visits/{guest.appointment_id}/device-test", status_code=303)
    max_age = max(60, int((guest.expires_at - utc_now()).total_seconds()))
    response.set_cookie(
        invitations.GUEST_COOKIE,
        invitations.guest_cookie_value(settings, guest),
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        path="/",
        max_age=max_age,
    )
    return response
