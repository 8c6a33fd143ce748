"""Authentication state: web sessions, API tokens, passwords, TOTP, lockout and rate limits."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyotp
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.config import Settings
from telecare.core.crypto import Passwords, new_token, seal, token_digest, unseal
from telecare.core.db import as_uow
from telecare.core.errors import TooManyRequests
from telecare.core.time import utc_now
from telecare.identity.models import ApiToken, Patient, Practitioner, RateCounter, Role, User, WebSession

if TYPE_CHECKING:
    from telecare.auth.principal import Principal

TOTP_ISSUER = "Telecare"
TOTP_INTERVAL = 30  # RFC 6238 default time step
TOTP_WINDOW = 1  # accept one step of clock drift either side


def _settings(session: AsyncSession) -> Settings:
    return as_uow(session).settings


_passwords: dict[tuple[int, int, int], Passwords] = {}


def passwords(settings: Settings) -> Passwords:
    key = (settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    if key not in _passwords:
        _passwords[key] = Passwords(time_cost=key[0], memory_kib=key[1], parallelism=key[2])
    return _passwords[key]


# ---- TOTP -----------------------------------------------------------------------------------------------


def _totp_context(user_id: int) -> bytes:
    return f"totp:user:{user_id}".encode()


def set_totp_secret(settings: Settings, user: User, secret: str) -> None:
    user.totp_secret_sealed = seal(settings.data_key_bytes, secret.encode(), _totp_context(user.id))


def totp_secret(settings: Settings, user: User) -> str | None:
    if user.totp_secret_sealed is None:
        return None
    return unseal(settings.data_key_bytes, user.totp_secret_sealed, _totp_context(user.id)).decode()


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret, interval=TOTP_INTERVAL).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def match_totp_step(secret: str, code: str, at: datetime) -> int | None:
    """Return the time step a code belongs to (within the drift window), or None."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    step = int(at.timestamp()) // TOTP_INTERVAL
    for delta in range(-TOTP_WINDOW, TOTP_WINDOW + 1):
        candidate = step + delta
        if totp.generate_otp(candidate) == code:
            return candidate
    return None


def verify_totp(settings: Settings, user: User, code: str) -> bool:
    """Accept a code once: a code whose step is not newer than the last accepted one is a replay."""
    secret = totp_secret(settings, user)
    if secret is None:
        return False
    step = match_totp_step(secret, code, utc_now())
    if step is None:
        return False
    if user.totp_last_step is not None and step <= user.totp_last_step:
        return False
    user.totp_last_step = step
    return True


def current_totp(secret: str) -> str:
    return pyotp.TOTP(secret, interval=TOTP_INTERVAL).at(utc_now())


# ---- rate limits -----------------------------------------------------------------------------------------


async def _bump(session: AsyncSession, key: str, *, window: timedelta) -> RateCounter:
    """Add one to the fixed-window counter `key` (shared by all workers) and return it.

    The row is created with INSERT .. ON CONFLICT DO NOTHING and then read under a row lock, so concurrent
    first hits from one address count against one row instead of colliding on its key (a 500 on
    PostgreSQL) and concurrent hits cannot lose increments. SQLite serialises writers (BEGIN IMMEDIATE)."""
    now = utc_now()
    assert session.bind is not None
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(RateCounter)
        .values(key=key, window_start=now, count=0)
        .on_conflict_do_nothing(index_elements=[RateCounter.key])
    )
    counter = (
        await session.execute(
            select(RateCounter)
            .where(RateCounter.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if now - counter.window_start >= window:
        counter.window_start, counter.count = now, 1
    else:
        counter.count += 1
    await session.flush()
    return counter


async def hit_rate_limit(session: AsyncSession, key: str, *, limit: int, window: timedelta) -> None:
    """Fixed-window rate limit in the database. Raises 429 past `limit`."""
    counter = await _bump(session, key, window=window)
    if counter.count > limit:
        now = utc_now()
        retry = max(1, int((counter.window_start + window - now).total_seconds()))
        raise TooManyRequests("Too many attempts; try again later.", headers={"Retry-After": str(retry)})


async def count_failure(session: AsyncSession, key: str, *, window: timedelta) -> int:
    """One more failure under `key` within `window`; returns how many there are now."""
    return (await _bump(session, key, window=window)).count


async def clear_failures(session: AsyncSession, key: str) -> None:
    await session.execute(delete(RateCounter).where(RateCounter.key == key))


async def lock_account(session: AsyncSession, user: User, settings: Settings) -> None:
    """Lock sign-in for the lockout period and end every web session (API tokens stay: they are separate
    credentials issued by an admin, revoked on their own)."""
    now = utc_now()
    user.locked_until = now + timedelta(minutes=settings.login_lockout_minutes)
    user.failed_logins = 0
    await session.execute(
        update(WebSession)
        .where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def count_password_failure(session: AsyncSession, user: User, settings: Settings) -> bool:
    """A wrong password (at sign-in or re-entered to break the glass) counts toward the account lockout;
    True when this failure locked the account."""
    user.failed_logins += 1
    if user.failed_logins >= settings.login_max_failures:
        await lock_account(session, user, settings)
        return True
    return False


# ---- revocation events -----------------------------------------------------------------------------------

REVOKED_TOPIC = "auth.revoked"


def publish_revoked(
    session: AsyncSession,
    *,
    user_id: int | None = None,
    session_id: int | None = None,
    token_id: int | None = None,
    patient_id: int | None = None,
) -> None:
    """Tell every worker's open sockets, after commit, that a credential or a patient relationship of
    `user_id` (or web session `session_id`) ended: `auth.sockets.SocketGuard` re-checks them at once
    instead of at the next timed re-check. Ids only (NOTIFY payloads)."""
    payload = {
        k: v
        for k, v in {
            "user_id": user_id,
            "session_id": session_id,
            "token_id": token_id,
            "patient_id": patient_id,
        }.items()
        if v is not None
    }
    as_uow(session).publish(REVOKED_TOPIC, payload)


# ---- sessions --------------------------------------------------------------------------------------------


def idle_limit(settings: Settings, role: Role) -> timedelta:
    minutes = settings.patient_idle_minutes if role is Role.PATIENT else settings.staff_idle_minutes
    return timedelta(minutes=minutes)


@dataclass(frozen=True)
class NewSession:
    token: str
    csrf_token: str
    record: WebSession


async def create_web_session(
    session: AsyncSession, user: User, *, client_addr: str | None, mfa_verified: bool
) -> NewSession:
    settings = _settings(session)
    token = new_token()
    csrf = new_token(24)
    now = utc_now()
    record = WebSession(
        token_hash=token_digest(token),
        user_id=user.id,
        org_id=user.org_id,
        csrf_token=csrf,
        mfa_verified=mfa_verified,
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=settings.session_absolute_hours),
        client_addr=client_addr,
    )
    session.add(record)
    await session.flush()
    return NewSession(token, csrf, record)


def _with_profile(stmt: Any) -> Any:
    """`stmt` (which selects `User`) also selecting the user's patient and practitioner ids: one query
    instead of three on every authenticated request."""
    return (
        stmt.add_columns(Patient.id, Practitioner.id)
        .outerjoin(Patient, Patient.user_id == User.id)
        .outerjoin(Practitioner, Practitioner.user_id == User.id)
    )


@functools.cache
def _token_statement() -> Any:
    """The bearer-token lookup, built once (it runs on every API request; building it cost more than
    running it)."""
    return _with_profile(
        select(
            ApiToken.token_hash,
            ApiToken.revoked_at,
            ApiToken.expires_at,
            ApiToken.last_used_at,
            ApiToken.scopes,
            User.id,
            User.org_id,
            User.role,
            User.is_active,
            User.email,
            User.display_name,
        )
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.id == bindparam("tc_token_id"))
    )


@functools.cache
def _session_statement() -> Any:
    """The session-cookie lookup, built once (every page request)."""
    return _with_profile(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == bindparam("tc_token_hash"))
    )


def _own_profile(
    role: Role, patient_id: int | None, practitioner_id: int | None
) -> tuple[int | None, int | None]:
    if role is Role.PATIENT:
        return patient_id, None
    return None, practitioner_id


async def _profile_ids(session: AsyncSession, user: User) -> tuple[int | None, int | None]:
    patient_id = practitioner_id = None
    if Role(user.role) is Role.PATIENT:
        patient_id = (await session.execute(select(Patient.id).where(Patient.user_id == user.id))).scalar()
    else:
        practitioner_id = (
            await session.execute(select(Practitioner.id).where(Practitioner.user_id == user.id))
        ).scalar()
    return patient_id, practitioner_id


async def principal_for_user(
    session: AsyncSession,
    user: User,
    *,
    kind: str,
    client_addr: str | None,
    scopes: frozenset[str] | None = None,
    session_id: int | None = None,
    mfa_verified: bool = False,
    csrf_token: str | None = None,
    profile: tuple[int | None, int | None] | None = None,
) -> Principal:
    """`profile`: (patient id, practitioner id) when the caller's query already joined them."""
    from telecare.auth.principal import Principal

    if profile is None:
        patient_id, practitioner_id = await _profile_ids(session, user)
    else:
        patient_id, practitioner_id = _own_profile(Role(user.role), *profile)
    return Principal(
        user_id=user.id,
        org_id=user.org_id,
        role=Role(user.role),
        kind=kind,
        client_addr=client_addr,
        scopes=scopes,
        session_id=session_id,
        mfa_verified=mfa_verified,
        patient_id=patient_id,
        practitioner_id=practitioner_id,
        email=user.email,
        display_name=user.display_name,
        csrf_token=csrf_token,
    )


def _write_aside(session: AsyncSession, statement: Any) -> None:
    """Run `statement` in its own short transaction once the request's unit of work has ended, whether it
    committed or not: a GET's unit of work is read-only, and an idle session's revocation must persist even
    though the request it refuses fails."""

    async def job(uow: AsyncSession) -> None:
        await uow.execute(statement)

    as_uow(session).after_rollback(job)


# A plain read writes nothing but its audit entry: "last seen" (idle timeout) and "last used" (token
# listing) are refreshed at most this often per credential, so the idle timeout runs from the last refresh
# and may end up to this much earlier than the last request (a minute of a 15- or 30-minute limit).
TOUCH_INTERVAL = timedelta(seconds=60)


async def principal_from_session(
    session: AsyncSession, token: str, client_addr: str | None, *, touch: bool = True
) -> Principal | None:
    """Resolve a session cookie; expired (idle or absolute) or revoked sessions resolve to None. `touch`
    counts this as activity for the idle timeout (a request does; a socket's re-check need not)."""
    settings = _settings(session)
    row = (await session.execute(_session_statement(), {"tc_token_hash": token_digest(token)})).first()
    if row is None:
        return None
    record, user, patient_id, practitioner_id = row
    if record.revoked_at is not None or not user.is_active:
        return None
    now = utc_now()
    if now >= record.expires_at or now - record.last_seen_at >= idle_limit(settings, Role(user.role)):
        _write_aside(
            session,
            update(WebSession)
            .where(WebSession.id == record.id, WebSession.revoked_at.is_(None))
            .values(revoked_at=now),
        )
        return None
    if touch and now - record.last_seen_at >= TOUCH_INTERVAL:
        _write_aside(session, update(WebSession).where(WebSession.id == record.id).values(last_seen_at=now))
    return await principal_for_user(
        session,
        user,
        kind="session",
        client_addr=client_addr,
        session_id=record.id,
        mfa_verified=record.mfa_verified,
        csrf_token=record.csrf_token,
        profile=(patient_id, practitioner_id),
    )


async def revoke_session(session: AsyncSession, session_id: int) -> None:
    """Sign out one web session; its open sockets close (`auth.sockets`)."""
    await session.execute(
        update(WebSession)
        .where(WebSession.id == session_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=utc_now())
    )
    publish_revoked(session, session_id=session_id)


# ---- API tokens ------------------------------------------------------------------------------------------

TOKEN_PREFIX = "tc_"  # noqa: S105 - a prefix, not a secret


async def create_api_token(
    session: AsyncSession, user: User, *, scopes: list[str], name: str, expires_at: datetime | None
) -> tuple[ApiToken, str]:
    secret = new_token()
    record = ApiToken(
        user_id=user.id,
        org_id=user.org_id,
        name=name,
        token_hash=token_digest(secret),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
    )
    session.add(record)
    await session.flush()
    return record, f"{TOKEN_PREFIX}{record.id}_{secret}"


async def principal_from_token(
    session: AsyncSession, token: str, client_addr: str | None
) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    # ASCII and bounded before the lookup: an id beyond 64 bits made the SQLite driver raise, and a
    # non-ASCII digit ("²") made int() raise: both were a 500 to anyone holding no credentials.
    if not (token_id.isascii() and token_id.isdigit()) or len(token_id) > 10 or not secret:
        return None
    row = (await session.execute(_token_statement(), {"tc_token_id": int(token_id)})).first()
    from telecare.core.crypto import constant_time_equal

    if row is None or not constant_time_equal(row[0], token_digest(secret)):
        return None
    (_, revoked_at, expires_at, last_used_at, scopes, user_id, org_id, role, is_active, email, name) = row[
        :11
    ]
    now = utc_now()
    if revoked_at is not None or (expires_at is not None and now >= expires_at):
        return None
    if not is_active:
        return None
    if last_used_at is None or now - last_used_at >= TOUCH_INTERVAL:
        _write_aside(session, update(ApiToken).where(ApiToken.id == int(token_id)).values(last_used_at=now))
    from telecare.auth.principal import Principal

    role = Role(role)
    patient_id, practitioner_id = _own_profile(role, row[11], row[12])
    # Token holders authenticated with a secret issued to an MFA-verified staff member or by an admin.
    return Principal(
        user_id=user_id,
        org_id=org_id,
        role=role,
        kind="token",
        client_addr=client_addr,
        scopes=frozenset(scopes),
        mfa_verified=True,
        patient_id=patient_id,
        practitioner_id=practitioner_id,
        email=email,
        display_name=name,
    )


async def revoke_all_credentials(session: AsyncSession, user_id: int) -> None:
    """Used when a user is disabled: every session and token stops working at once, open sockets too."""
    now = utc_now()
    await session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    publish_revoked(session, user_id=user_id)
