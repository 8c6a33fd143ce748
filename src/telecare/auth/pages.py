"""Login, TOTP enrolment and challenge, logout."""

from __future__ import annotations

from typing import Annotated, Any

import segno
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from telecare.auth import service as auth_service
from telecare.auth import sessions
from telecare.auth.dependencies import (
    SESSION_COOKIE,
    Authenticated,
    DbSession,
    client_addr,
    public,
    same_origin,
)
from telecare.auth.principal import Principal
from telecare.core.crypto import constant_time_equal, new_token, token_digest
from telecare.core.errors import TooManyRequests
from telecare.core.time import utc_now
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


def login_refused_message(settings: Any) -> str:
    return (
        "The email or password is not correct, or the account is locked after "
        f"{settings.login_max_failures} failed attempts. Wait {settings.login_lockout_minutes} minutes "
        "if you may have mistyped several times."
    )


def _login_refused(request: Request, email: str, status_code: int = 401) -> HTMLResponse:
    return _login_page(
        request,
        status_code=status_code,
        error=login_refused_message(request.app.state.settings),
        email=email,
    )


LOGIN_CSRF_COOKIE = "tc_login_csrf"


def _login_page(
    request: Request,
    *,
    status_code: int = 200,
    error: str | None = None,
    email: str = "",
    notice: str | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The sign-in form with a fresh login CSRF token, in the form and in a cookie (double submit)."""
    token = new_token()
    response = page(
        request,
        "login.html",
        status_code=status_code,
        headers=headers,
        error=error,
        email=email,
        notice=notice,
        login_csrf=token,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.app.state.settings.cookie_secure,
        path="/login",
        max_age=3600,
    )
    return response


def _login_csrf_ok(request: Request, supplied: str) -> bool:
    """Login CSRF defence (OWASP): a cross-site page must not sign the victim into the attacker's account.
    The Origin, when the browser names one, must be ours, and the form must carry the token of the cookie
    set with the form."""
    # With `Referrer-Policy: no-referrer` browsers send `Origin: null` on a same-site form post, so "null"
    # proves nothing either way: the token decides. A named other origin, or a browser saying cross-site
    # (Fetch Metadata), is refused outright.
    origin = request.headers.get("origin")
    if origin not in (None, "null") and not same_origin(request, origin):
        return False
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    return bool(cookie and supplied and constant_time_equal(cookie, supplied))


@router.get("/login", response_class=HTMLResponse, dependencies=[PublicRoute])
async def login_form(request: Request) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("reason", ""))
    return _login_page(request, notice=notice)


@router.post("/login", response_class=HTMLResponse, dependencies=[PublicRoute])
async def login(
    request: Request,
    session: DbSession,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    if not _login_csrf_ok(request, csrf_token):
        return _login_page(
            request,
            status_code=403,
            error="This sign-in form has expired or did not come from this site. Please sign in again.",
            email=email,
        )
    addr = client_addr(request)
    try:
        outcome = await auth_service.authenticate(session, email=email, password=password, client_addr=addr)
    except TooManyRequests as exc:
        return _login_page(
            request,
            status_code=429,
            headers=exc.headers,
            error="Too many sign-in attempts from this address. Wait a minute and try again.",
            email=email,
        )
    if not outcome.ok or outcome.user is None:
        # One message whether the account is unknown, the password wrong or the account locked: the answer
        # must not tell an attacker which emails have accounts (docs/security.md, account enumeration).
        return _login_refused(request, email)
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
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.get("/login/enrol", response_class=HTMLResponse)
async def enrol_form(request: Request, session: DbSession, principal: Principal = PreMfa) -> Response:
    user = await session.get(User, principal.user_id)
    assert user is not None
    if user.totp_enrolled_at is not None:
        return RedirectResponse("/login/totp", status_code=303)
    secret = auth_service.enrolment_secret(session, user)
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
        ok = await auth_service.verify_second_factor(
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
    if not ok and user.locked_until is not None and user.locked_until > utc_now():
        # Locked (now or by this code): the pending session is revoked; sign in again after the lockout.
        refused = _login_refused(request, "", status_code=401)
        refused.delete_cookie(SESSION_COOKIE, path="/")
        return refused
    if not ok:
        context: dict[str, Any] = {
            "principal": principal,
            "error": "That code is not valid. Enter the current 6-digit code (each code can be used once).",
        }
        if template == "enrol.html":
            secret = auth_service.enrolment_secret(session, user)
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
