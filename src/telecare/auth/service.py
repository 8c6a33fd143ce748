"""Authentication actions: sign-in with lockout, the second factor (TOTP) with lockout, API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.audit import service as audit
from telecare.audit.models import AuditAction, AuditOutcome, Purpose
from telecare.auth import sessions
from telecare.auth.principal import Principal
from telecare.core.db import Database, as_uow
from telecare.core.errors import Forbidden, NotFound
from telecare.core.time import utc_now
from telecare.identity.models import ApiToken, Role, User
from telecare.identity.service import get_user


def _db(session: AsyncSession) -> Database:
    return as_uow(session).db


# ---- login and TOTP ---------------------------------------------------------------------------------------


@dataclass
class LoginOutcome:
    user: User | None
    ok: bool
    reason: str = ""
    retry_after: int | None = None


async def authenticate(
    session: AsyncSession, *, email: str, password: str, client_addr: str | None
) -> LoginOutcome:
    """Check a password with per-IP rate limits and per-account lockout. Never raises for bad credentials,
    so the failure count and audit entry commit with the response."""
    settings = _db(session).settings
    await sessions.hit_rate_limit(
        session,
        f"login-ip:{client_addr}",
        limit=settings.login_rate_per_ip_per_minute,
        window=timedelta(minutes=1),
    )
    email = email.strip().lower()
    user = (await session.execute(select(User).where(func.lower(User.email) == email))).scalar_one_or_none()
    hasher = sessions.passwords(settings)
    now = utc_now()
    if user is not None and user.locked_until is not None and user.locked_until > now:
        hasher.verify(None, password)  # same cost as a real check
        retry = int((user.locked_until - now).total_seconds()) + 1
        await _audit_login(session, user, client_addr, AuditOutcome.DENIED, "locked")
        return LoginOutcome(user, False, "locked", retry)
    valid = hasher.verify(user.password_hash if user else None, password)
    if user is None or not valid or not user.is_active:
        if user is not None:
            await sessions.count_password_failure(session, user, settings)
            await _audit_login(session, user, client_addr, AuditOutcome.FAILURE, "bad_credentials")
        return LoginOutcome(None, False, "bad_credentials")
    user.failed_logins = 0
    user.locked_until = None
    assert user.password_hash is not None
    if hasher.needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    await _audit_login(session, user, client_addr, AuditOutcome.SUCCESS, "password")
    return LoginOutcome(user, True)


async def _audit_login(
    session: AsyncSession, user: User, client_addr: str | None, outcome: AuditOutcome, step: str
) -> None:
    actor = audit.Actor(user.id, user.org_id, str(user.role), "session", client_addr)
    await audit.record(
        session,
        actor,
        action=AuditAction.LOGIN,
        resource_type="User",
        resource_id=user.id,
        outcome=outcome,
        purpose=Purpose.SYSTEM,
        detail={"step": step},
    )


async def verify_second_factor(
    session: AsyncSession, *, user: User, code: str, client_addr: str | None
) -> bool:
    """TOTP check with a per-user rate limit and a lockout after `totp_max_failures` wrong codes in a row
    (a password alone must not allow guessing codes for ever): the lock ends every web session of the user,
    the pending one included. A code is accepted once (replay rejected). Never raises for a wrong code, so
    the count, the lock and the audit entry commit with the response."""
    settings = _db(session).settings
    await sessions.hit_rate_limit(
        session,
        f"totp-user:{user.id}",
        limit=settings.totp_rate_per_user_per_minute,
        window=timedelta(minutes=1),
    )
    now = utc_now()
    if user.locked_until is not None and user.locked_until > now:
        await _audit_login(session, user, client_addr, AuditOutcome.DENIED, "locked")
        return False
    # Re-read the replay guard under a row lock: two concurrent submissions of one code (a phished code
    # raced against its owner) must not both see the old last step. SQLite already serialises writers.
    await session.refresh(user, with_for_update=True)
    ok = sessions.verify_totp(settings, user, code)
    failures_key = f"totp-fail:{user.id}"
    if ok:
        await sessions.clear_failures(session, failures_key)
        if user.totp_enrolled_at is None:
            user.totp_enrolled_at = now
    else:
        failures = await sessions.count_failure(
            session, failures_key, window=timedelta(minutes=settings.login_lockout_minutes)
        )
        if failures >= settings.totp_max_failures:
            await sessions.clear_failures(session, failures_key)
            await sessions.lock_account(session, user, settings)
            await _audit_login(session, user, client_addr, AuditOutcome.DENIED, "totp_lockout")
            return False
    await _audit_login(
        session,
        user,
        client_addr,
        AuditOutcome.SUCCESS if ok else AuditOutcome.FAILURE,
        "totp",
    )
    return ok


async def mark_session_verified(session: AsyncSession, session_id: int) -> None:
    from telecare.identity.models import WebSession

    record = await session.get(WebSession, session_id)
    if record is not None:
        record.mfa_verified = True


def enrolment_secret(session: AsyncSession, user: User) -> str:
    """The TOTP secret to show during enrolment; refused once enrolled."""
    if user.totp_enrolled_at is not None:
        raise Forbidden("Two-factor authentication is already enrolled.")
    secret = sessions.totp_secret(_db(session).settings, user)
    if secret is None:
        raise NotFound("No enrolment pending.")
    return secret


# ---- API tokens -------------------------------------------------------------------------------------------


async def issue_token(
    session: AsyncSession,
    principal: Principal,
    *,
    user_id: int,
    scopes: list[str],
    name: str,
    expires_in_days: int | None,
) -> tuple[ApiToken, str]:
    """A scoped bearer token for a user of the caller's organization. The secret is shown to the caller, so
    it must not carry grants the caller lacks (`access.rules.may_grant_role`)."""
    access.reach_for(principal, Resource.API_TOKEN, Action.CREATE)
    user = await get_user(session, principal, user_id=user_id)
    if user.id != principal.user_id and not rules.may_grant_role(principal, Role(user.role)):
        raise Forbidden("You cannot issue a token that reaches data your role cannot reach.")
    if not user.is_active:
        raise Forbidden("The user is disabled.")
    expires = utc_now() + timedelta(days=expires_in_days) if expires_in_days else None
    record, token = await sessions.create_api_token(
        session, user, scopes=scopes, name=name, expires_at=expires
    )
    await audit.record(
        session,
        principal.actor(),
        action=AuditAction.CREATE,
        resource_type="ApiToken",
        resource_id=record.id,
        org_id=user.org_id,
        purpose=Purpose.OPERATIONS,
        detail={"user_id": user.id, "scopes": record.scopes},
    )
    return record, token


async def revoke_token(session: AsyncSession, principal: Principal, *, token_id: int) -> ApiToken:
    access.reach_for(principal, Resource.API_TOKEN, Action.DELETE)
    record = await session.get(ApiToken, token_id)
    if record is None or record.org_id != principal.org_id:
        raise NotFound("No such token.")
    if record.revoked_at is None:
        record.revoked_at = utc_now()
        sessions.publish_revoked(session, user_id=record.user_id, token_id=record.id)
        await audit.record(
            session,
            principal.actor(),
            action=AuditAction.DELETE,
            resource_type="ApiToken",
            resource_id=record.id,
            purpose=Purpose.OPERATIONS,
        )
    return record


async def list_tokens(session: AsyncSession, principal: Principal) -> list[ApiToken]:
    access.reach_for(principal, Resource.API_TOKEN, Action.SEARCH)
    return list(
        (
            await session.execute(
                select(ApiToken).where(ApiToken.org_id == principal.org_id).order_by(ApiToken.id)
            )
        ).scalars()
    )
