"""Login, TOTP enrolment and challenge, logout."""

from __future__ import annotations

from typing import Annotated, Any

import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from telecare.auth import sessions
from telecare.auth.dependencies import SESSION_COOKIE, Authenticated, DbSession, client_addr, public
from telecare.auth.principal import Principal
from telecare.core.crypto import token_digest
from telecare.core.errors import TooManyRequests
from telecare.identity import service
from telecare.identity.models import User, WebSession
from telecare.web.templating import page

router = APIRouter(include_in_schema=False)
PublicRoute = Depends(public)
PreMfa = Authenticated(allow_unverified_mfa=True)


def _set_cookie(request: Request, response: Response, token: str) -> None:
    settings = request.app.state.settings
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,
        path="/",
        max_age=settings.session_absolute_hours * 3600,
    )


@router.get("/", dependencies=[PublicRoute])
async def index(request: Request) -> Response:
    return RedirectResponse("/home" if request.cookies.get(SESSION_COOKIE) else "/login", status_code=303)


NOTICES = {
    "idle": "You were signed out after a period of inactivity. Sign in again to continue.",
}


@router.get("/login", response_class=HTMLResponse, dependencies=[PublicRoute])
async def login_form(request: Request) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("reason", ""))
    return page(request, "login.html", error=None, email="", notice=notice)


@router.post("/login", response_class=HTMLResponse, dependencies=[PublicRoute])
async def login(
    request: Request,
    session: DbSession,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=256)],
) -> Response:
    addr = client_addr(request)
    try:
        outcome = await service.authenticate(session, email=email, password=password, client_addr=addr)
    except TooManyRequests as exc:
        return page(
            request,
            "login.html",
            status_code=429,
            headers=exc.headers,
            error="Too many sign-in attempts from this address. Wait a minute and try again.",
            email=email,
        )
    if not outcome.ok or outcome.user is None:
        message = (
            "This account is locked after repeated failed sign-ins. Try again in "
            f"{(outcome.retry_after or 60) // 60 + 1} minutes."
            if outcome.reason == "locked"
            else "The email or password is not correct."
        )
        return page(request, "login.html", status_code=401, error=message, email=email)
    user = outcome.user
    new = await sessions.create_web_session(
        session, user, client_addr=addr, mfa_verified=user.role == "patient"
    )
    if user.role == "patient":
        target = "/home"
    else:
        target = "/login/totp" if user.totp_enrolled_at else "/login/enrol"
    response = RedirectResponse(target, status_code=303)
    _set_cookie(request, response, new.token)
    return response


@router.get("/login/enrol", response_class=HTMLResponse)
async def enrol_form(request: Request, session: DbSession, principal: Principal = PreMfa) -> Response:
    user = await session.get(User, principal.user_id)
    assert user is not None
    if user.totp_enrolled_at is not None:
        return RedirectResponse("/login/totp", status_code=303)
    secret = service.enrolment_secret(session, user)
    return page(
        request, "enrol.html", principal=principal, secret=secret, qr_svg=_qr(secret, user.email), error=None
    )


def _qr(secret: str, email: str) -> str:
    """The enrolment QR code as inline SVG, rendered here (segno): the secret never leaves the server."""
    uri = sessions.provisioning_uri(secret, email)
    svg: str = segno.make(uri, error="m").svg_inline(scale=5, title="Scan with your authenticator app")
    return svg


@router.post("/login/enrol", response_class=HTMLResponse)
async def enrol(
    request: Request,
    session: DbSession,
    code: Annotated[str, Form(max_length=10)],
    principal: Principal = PreMfa,
) -> Response:
    return await _second_factor(request, session, principal, code, "enrol.html")


@router.get("/login/totp", response_class=HTMLResponse)
async def totp_form(request: Request, session: DbSession, principal: Principal = PreMfa) -> Response:
    user = await session.get(User, principal.user_id)
    assert user is not None
    if user.totp_enrolled_at is None:
        return RedirectResponse("/login/enrol", status_code=303)
    return page(request, "totp.html", principal=principal, error=None)


@router.post("/login/totp", response_class=HTMLResponse)
async def totp(
    request: Request,
    session: DbSession,
    code: Annotated[str, Form(max_length=10)],
    principal: Principal = PreMfa,
) -> Response:
    return await _second_factor(request, session, principal, code, "totp.html")


async def _second_factor(
    request: Request, session: DbSession, principal: Principal, code: str, template: str
) -> Response:
    user = await session.get(User, principal.user_id)
    assert user is not None
    assert principal.session_id is not None
    try:
        ok = await service.verify_second_factor(
            session, user=user, code=code, client_addr=principal.client_addr
        )
    except TooManyRequests as exc:
        return page(
            request,
            "totp.html",
            status_code=429,
            headers=exc.headers,
            principal=principal,
            error="Too many attempts. Wait a minute and try again.",
        )
    if not ok:
        context: dict[str, Any] = {
            "principal": principal,
            "error": "That code is not valid. Enter the current 6-digit code (each code can be used once).",
        }
        if template == "enrol.html":
            secret = service.enrolment_secret(session, user)
            context.update(secret=secret, qr_svg=_qr(secret, user.email))
        return page(request, template, status_code=401, **context)
    # Rotate the session id on privilege change (session fixation defence).
    old = await session.get(WebSession, principal.session_id)
    await sessions.revoke_session(session, principal.session_id)
    new = await sessions.create_web_session(
        session, user, client_addr=principal.client_addr, mfa_verified=True
    )
    if old is not None:
        new.record.created_at, new.record.expires_at = old.created_at, old.expires_at
    response = RedirectResponse("/home", status_code=303)
    _set_cookie(request, response, new.token)
    return response


@router.post("/logout", dependencies=[PublicRoute])
async def logout(request: Request, session: DbSession) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        record = (
            await session.execute(select(WebSession).where(WebSession.token_hash == token_digest(token)))
        ).scalar_one_or_none()
        form = await request.form()
        if record is not None and form.get("csrf_token") == record.csrf_token:
            await sessions.revoke_session(session, record.id)
    idle = (await request.form()).get("reason") == "idle"
    response = RedirectResponse("/login?reason=idle" if idle else "/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
