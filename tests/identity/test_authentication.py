"""Authentication end to end through the real pages and API, on SQLite and PostgreSQL: argon2id parameters,
lockout and per-IP rate limits, session cookies, CSRF, idle and absolute timeouts, TOTP for every staff role,
TOTP replay and encryption at rest, bearer tokens, disabling users and logout."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher, Type, extract_parameters
from pydantic import SecretStr
from sqlalchemy import select, text

from telecare.auth import service as auth_service
from telecare.auth import sessions
from telecare.auth.principal import system_principal
from telecare.config import Settings
from telecare.core.crypto import DecryptionError
from telecare.core.db import Database
from telecare.core.time import advance_clock, freeze_clock, utc_now
from telecare.identity.models import ApiToken, Role, User, WebSession
from tests.conftest import make_settings
from tests.factories import (
    PASSWORD,
    Account,
    add_to_care_team,
    bearer,
    login_post,
    make_org,
    make_patient,
    make_user,
    token_for,
    web_login,
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """This module runs with the production argon2id parameters (the Settings defaults), not the suite's
    cheap ones (tests/conftest.FAST_ARGON2), so the hashes it checks are the ones a deployment stores."""
    defaults = Settings.model_fields
    return make_settings(
        database_url,
        tmp_path / "data",
        argon2_time_cost=defaults["argon2_time_cost"].default,
        argon2_memory_kib=defaults["argon2_memory_kib"].default,
        argon2_parallelism=defaults["argon2_parallelism"].default,
    )


STAFF = ["physician", "nurse", "therapist", "pharmacist", "coordinator", "informatics", "admin"]
COOKIE = "tc_session"


# ---- helpers ----------------------------------------------------------------------------------------------


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def _password_step(client: httpx.AsyncClient, account: Account, password: str | None = None) -> str:
    """POST /login; returns the session cookie value it set."""
    r = await login_post(client, {"email": account.email, "password": password or account.password})
    assert r.status_code == 303, r.text
    return client.cookies[COOKIE]


async def _totp_step(client: httpx.AsyncClient, account: Account, code: str | None = None) -> httpx.Response:
    assert account.totp_secret is not None
    page = await client.get("/login/totp")
    if page.status_code == 303:  # first sign-in: enrolment page
        page = await client.get(page.headers["location"])
    assert page.status_code == 200, page.text
    action = re.search(r'<form method="post" action="(/login/[^"]+)"', page.text)
    assert action
    code = code or sessions.current_totp(account.totp_secret)
    return await client.post(action.group(1), data={"code": code, "csrf_token": _csrf(page.text)})


def _with_cookie(client: httpx.AsyncClient, value: str) -> dict[str, str]:
    """Send exactly this session cookie (the jar is cleared so only the given value travels)."""
    client.cookies.clear()
    return {"Cookie": f"{COOKIE}={value}"}


async def _me(client: httpx.AsyncClient, cookie: str) -> httpx.Response:
    return await client.get("/api/v1/me", headers=_with_cookie(client, cookie))


async def _user(db: Database, user_id: int) -> User:
    async with db.unit_of_work() as s:
        user = await s.get(User, user_id)
        assert user is not None
        return user


# ---- passwords --------------------------------------------------------------------------------------------


async def test_password_hash_is_argon2id_with_owasp_parameters(db: Database) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    async with db.engine.connect() as conn:
        stored = (
            await conn.execute(text("SELECT password_hash FROM users WHERE id = :id"), {"id": nurse.user_id})
        ).scalar_one()
    assert stored.startswith("$argon2id$v=19$")
    params = extract_parameters(stored)
    assert params.type is Type.ID
    assert params.memory_cost >= 19_456  # KiB, OWASP minimum (docs/security.md#goal-16)
    assert params.time_cost >= 2
    assert params.parallelism == 1
    assert PASSWORD not in stored


async def test_login_rehashes_a_hash_made_with_weaker_parameters(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    weak = PasswordHasher(time_cost=1, memory_cost=8_192, parallelism=2, type=Type.ID).hash(PASSWORD)
    async with db.unit_of_work() as s:
        user = await s.get(User, patient.user_id)
        assert user is not None
        user.password_hash = weak

    # A wrong password never touches the stored hash.
    r = await login_post(client, {"email": patient.email, "password": "wrong password here"})
    assert r.status_code == 401
    assert (await _user(db, patient.user_id)).password_hash == weak

    r = await login_post(client, {"email": patient.email, "password": PASSWORD})
    assert r.status_code == 303
    upgraded = (await _user(db, patient.user_id)).password_hash
    assert upgraded is not None
    assert upgraded != weak
    params = extract_parameters(upgraded)
    assert (params.memory_cost, params.time_cost, params.parallelism) == (19_456, 2, 1)
    # The upgraded hash still accepts the same password.
    client.cookies.clear()
    r = await login_post(client, {"email": patient.email, "password": PASSWORD})
    assert r.status_code == 303
    assert (await _user(db, patient.user_id)).password_hash == upgraded


# ---- lockout and rate limits ------------------------------------------------------------------------------


async def test_account_locks_after_repeated_failures_and_unlocks_after_the_lockout(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    org = await make_org(db)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    freeze_clock(utc_now())
    for _ in range(settings.login_max_failures):
        r = await login_post(client, {"email": patient.email, "password": "not the password"})
        assert r.status_code == 401
        assert "The email or password is not correct, or the account is locked" in r.text
    # Even the right password is refused while locked, with a message that says so.
    r = await login_post(client, {"email": patient.email, "password": PASSWORD})
    assert r.status_code == 401
    assert "locked" in r.text
    assert COOKIE not in r.cookies
    advance_clock(timedelta(minutes=settings.login_lockout_minutes - 1))
    r = await login_post(client, {"email": patient.email, "password": PASSWORD})
    assert r.status_code == 401
    assert "locked" in r.text
    advance_clock(timedelta(minutes=1, seconds=1))
    r = await login_post(client, {"email": patient.email, "password": PASSWORD})
    assert r.status_code == 303
    assert r.headers["location"] == "/home"
    async with db.engine.connect() as conn:
        outcomes = (
            await conn.execute(
                text(
                    "SELECT outcome, detail FROM audit_entries WHERE action = 'login' AND actor_user_id = :u "
                    "ORDER BY id"
                ),
                {"u": patient.user_id},
            )
        ).all()
    assert [o for o, _ in outcomes] == ["failure"] * 5 + ["denied", "denied", "success"]


async def test_login_rate_limit_per_ip_answers_429_with_retry_after(app_with: Any, db: Database) -> None:
    org = await make_org(db)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    freeze_clock(utc_now())
    client = await app_with(login_rate_per_ip_per_minute=3)
    async with client:
        for _ in range(3):
            r = await login_post(client, {"email": "nobody@x.test", "password": "guess guess"})
            assert r.status_code == 401
        r = await login_post(client, {"email": patient.email, "password": PASSWORD})
        assert r.status_code == 429
        assert "Too many sign-in attempts" in r.text
        retry = int(r.headers["retry-after"])
        assert 1 <= retry <= 60
        assert COOKIE not in r.cookies
        # Another address is not limited by this one's attempts.
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=client._transport.app, client=("203.0.113.9", 1)),  # type: ignore[attr-defined]
            base_url="http://testserver",
        )
        async with other:
            r = await login_post(other, {"email": patient.email, "password": PASSWORD})
            assert r.status_code == 303
        advance_clock(timedelta(seconds=retry))
        r = await login_post(client, {"email": patient.email, "password": PASSWORD})
        assert r.status_code == 303


async def test_concurrent_first_logins_from_one_address_never_fail_with_500(
    app_with: Any, db: Database
) -> None:
    """The per-IP counter row is created by whichever request comes first; racing requests must count
    against it instead of colliding on its primary key (seen on PostgreSQL as a 500)."""
    org = await make_org(db)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    client = await app_with(login_rate_per_ip_per_minute=4)
    async with client:
        await client.get("/login")  # one form (and its CSRF cookie) for the racing posts
        responses = await asyncio.gather(
            *(login_post(client, {"email": patient.email, "password": "wrong password!"}) for _ in range(8))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * 4 + [429] * 4, statuses


# ---- cookies, rotation, CSRF ------------------------------------------------------------------------------


async def test_session_cookie_is_httponly_samesite_and_rotates_after_totp(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    r = await login_post(client, {"email": doc.email, "password": doc.password})
    assert r.status_code == 303
    assert r.headers["location"] == "/login/enrol"
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie
    assert "Path=/" in set_cookie
    before = client.cookies[COOKIE]

    r = await _totp_step(client, doc)
    assert r.status_code == 303, r.text
    assert "HttpOnly" in r.headers["set-cookie"]
    after = client.cookies[COOKIE]
    assert after != before
    # The pre-TOTP id is dead: it cannot be replayed even for the pre-MFA pages.
    r = await _me(client, before)
    assert r.status_code == 401
    assert r.json()["code"] == "not_authenticated"
    r = await _me(client, after)
    assert r.status_code == 200
    assert r.json()["email"] == doc.email
    # The rotated session keeps the original absolute deadline.
    async with db.unit_of_work() as s:
        rows = list((await s.execute(select(WebSession).where(WebSession.user_id == doc.user_id))).scalars())
    assert len(rows) == 2
    old, new = sorted(rows, key=lambda w: w.id)
    assert old.revoked_at is not None
    assert not old.mfa_verified
    assert new.revoked_at is None
    assert new.mfa_verified
    assert new.expires_at == old.expires_at


async def test_csrf_token_required_on_form_posts_and_unsafe_api_calls(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.COORDINATOR)
    await _password_step(client, nurse)
    # A forged TOTP form post (no csrf_token) is refused and leaves the session unverified.
    code = sessions.current_totp(nurse.totp_secret or "")
    r = await client.post("/login/enrol", data={"code": code})
    assert r.status_code == 403
    assert "CSRF" in r.text
    r = await client.get("/api/v1/me")
    assert r.status_code == 401
    assert r.json()["code"] == "mfa_required"
    r = await _totp_step(client, nurse)
    assert r.status_code == 303

    body = {"mrn": "CSRF-1", "given_name": "Ana", "family_name": "Lee", "birth_date": "1970-02-03",
            "sex": "female", "state": "PA"}  # fmt: skip
    r = await client.post("/api/v1/patients", json=body)
    assert r.status_code == 403
    assert r.json()["detail"] == "Missing or wrong CSRF token."
    r = await client.post("/api/v1/patients", json=body, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    home = await client.get("/home")
    r = await client.post("/api/v1/patients", json=body, headers={"X-CSRF-Token": _csrf(home.text)})
    assert r.status_code == 201, r.text
    assert r.json()["mrn"] == "CSRF-1"


# ---- timeouts ---------------------------------------------------------------------------------------------


async def test_a_plain_read_writes_last_seen_at_most_once_a_minute(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Reads write nothing but their audit entry: the session's and the token's "last seen" rows are
    refreshed at most once a minute (issue 8), and the idle timeout still counts from the refresh."""
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    freeze_clock(utc_now())
    await web_login(client, nurse)
    cookie = client.cookies[COOKIE]
    token = await token_for(db, nurse)

    async def stamps() -> tuple[Any, Any]:
        async with db.unit_of_work() as s:
            live = WebSession.user_id == nurse.user_id, WebSession.revoked_at.is_(None)
            seen = (await s.execute(select(WebSession.last_seen_at).where(*live))).scalar_one()
            mine = ApiToken.user_id == nurse.user_id
            used = (await s.execute(select(ApiToken.last_used_at).where(mine))).scalar_one()
            return seen, used

    assert (await _me(client, cookie)).status_code == 200
    client.cookies.clear()
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200
    first = await stamps()
    for _ in range(5):
        advance_clock(timedelta(seconds=10))
        assert (await _me(client, cookie)).status_code == 200
        client.cookies.clear()
        assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200
    assert await stamps() == first  # 50 s of reads: not one write
    advance_clock(timedelta(seconds=11))
    assert (await _me(client, cookie)).status_code == 200
    client.cookies.clear()
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200
    later = await stamps()
    assert later[0] > first[0]
    assert later[1] > first[1]


@pytest.mark.parametrize(("role", "idle_minutes"), [("nurse", 15), ("patient", 30)])
async def test_idle_timeout_by_role(
    client: httpx.AsyncClient, db: Database, role: str, idle_minutes: int
) -> None:
    org = await make_org(db)
    if role == "patient":
        account = await make_patient(db, org, with_login=True)
        assert isinstance(account, Account)
    else:
        account = await make_user(db, org, Role(role))
    freeze_clock(utc_now())
    await web_login(client, account)
    cookie = client.cookies[COOKIE]
    # Activity just inside the limit keeps the session alive, repeatedly.
    for _ in range(3):
        advance_clock(timedelta(minutes=idle_minutes) - timedelta(seconds=1))
        r = await _me(client, cookie)
        assert r.status_code == 200, r.text
    advance_clock(timedelta(minutes=idle_minutes))
    r = await _me(client, cookie)
    assert r.status_code == 401
    # The web UI sends the user back to the login page.
    r = await client.get("/home", headers=_with_cookie(client, cookie))
    assert r.status_code == 303
    assert r.headers["location"] == "/login"


async def test_absolute_timeout_after_12_hours_despite_activity(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    account = await make_patient(db, org, with_login=True)
    assert isinstance(account, Account)
    freeze_clock(utc_now())
    await web_login(client, account)
    cookie = client.cookies[COOKIE]
    step = timedelta(minutes=29)
    elapsed = timedelta(0)
    while elapsed + step < timedelta(hours=12):
        advance_clock(step)
        elapsed += step
        r = await _me(client, cookie)
        assert r.status_code == 200, f"expired early after {elapsed}"
    advance_clock(timedelta(hours=12) - elapsed)
    r = await _me(client, cookie)
    assert r.status_code == 401


# ---- TOTP -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", STAFF)
async def test_every_staff_role_needs_totp_before_any_page_or_api(
    client: httpx.AsyncClient, db: Database, role: str
) -> None:
    org = await make_org(db)
    account = await make_user(db, org, Role(role))
    await _password_step(client, account)
    for path in ("/home", "/api/v1/me", "/api/v1/patients", "/api/v1/users", "/api/v1/practitioners"):
        r = await client.get(path)
        if path.startswith("/api/"):
            assert r.status_code == 401, path
            assert r.json()["code"] == "mfa_required", path
        else:
            assert r.status_code == 303, path
            assert r.headers["location"] == "/login/totp"
    r = await _totp_step(client, account)
    assert r.status_code == 303
    r = await client.get("/api/v1/me")
    assert r.status_code == 200
    assert r.json()["role"] == role
    assert r.json()["totp_enrolled"] is True


async def test_patient_session_needs_no_totp(client: httpx.AsyncClient, db: Database) -> None:
    org = await make_org(db)
    account = await make_patient(db, org, with_login=True)
    assert isinstance(account, Account)
    r = await login_post(client, {"email": account.email, "password": account.password})
    assert r.headers["location"] == "/home"
    r = await client.get("/api/v1/me")
    assert r.status_code == 200
    assert r.json()["role"] == "patient"


async def test_replayed_or_older_totp_code_is_rejected(client: httpx.AsyncClient, db: Database) -> None:
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    assert doc.totp_secret
    freeze_clock(utc_now())
    await _password_step(client, doc)
    code = sessions.current_totp(doc.totp_secret)
    r = await _totp_step(client, doc, code)
    assert r.status_code == 303
    csrf = _csrf((await client.get("/home")).text)
    await client.post("/logout", data={"csrf_token": csrf})

    # Same code, fresh login: refused as a replay.
    await _password_step(client, doc)
    r = await _totp_step(client, doc, code)
    assert r.status_code == 401
    assert "each code can be used once" in r.text
    assert (await client.get("/api/v1/me")).json()["code"] == "mfa_required"
    # The previous step's code (inside the drift window, but older than the used one) is refused too.
    import pyotp

    older = pyotp.TOTP(doc.totp_secret).at(utc_now() - timedelta(seconds=30))
    assert (await _totp_step(client, doc, older)).status_code == 401
    # The next step's code is accepted once.
    advance_clock(timedelta(seconds=30))
    assert (await _totp_step(client, doc)).status_code == 303
    assert (await client.get("/api/v1/me")).status_code == 200


async def test_one_totp_code_submitted_twice_at_once_signs_in_only_once(app: Any, db: Database) -> None:
    """A phished code raced against its owner: exactly one of two concurrent submissions may win."""
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    assert doc.totp_secret
    freeze_clock(utc_now())
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(f"192.0.2.{i}", 1)), base_url="http://testserver"
        )
        for i in (1, 2)
    ]
    pages = []
    for c in clients:
        await _password_step(c, doc)
        page = await c.get("/login/enrol")
        assert page.status_code == 200
        pages.append(_csrf(page.text))
    code = sessions.current_totp(doc.totp_secret)
    results = await asyncio.gather(
        *(
            c.post("/login/enrol", data={"code": code, "csrf_token": csrf})
            for c, csrf in zip(clients, pages, strict=True)
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses[0] == 303
    assert statuses[1] in (401, 403), statuses  # refused (403 on the enrol page once enrolment completed)
    verified = [(await c.get("/api/v1/me")).status_code for c in clients]
    assert sorted(verified) == [200, 401]
    for c in clients:
        await c.aclose()


async def test_totp_guessing_is_rate_limited_per_user(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    assert nurse.totp_secret
    freeze_clock(utc_now())
    await _password_step(client, nurse)
    right = sessions.current_totp(nurse.totp_secret)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(settings.totp_rate_per_user_per_minute):
        assert (await _totp_step(client, nurse, wrong)).status_code == 401
    # Past the limit even the right code is turned away until the window ends.
    r = await _totp_step(client, nurse, right)
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert "Too many attempts" in r.text
    assert (await client.get("/api/v1/me")).json()["code"] == "mfa_required"
    advance_clock(timedelta(seconds=61))
    r = await _totp_step(client, nurse)
    assert r.status_code == 303
    assert (await client.get("/api/v1/me")).status_code == 200


async def test_totp_secret_is_encrypted_at_rest_and_bound_to_its_user(db: Database) -> None:
    org = await make_org(db)
    a = await make_user(db, org, Role.NURSE)
    b = await make_user(db, org, Role.NURSE)
    assert a.totp_secret
    assert b.totp_secret
    async with db.engine.connect() as conn:
        raw = {
            uid: bytes(sealed)
            for uid, sealed in (
                await conn.execute(
                    text("SELECT id, totp_secret_sealed FROM users WHERE org_id = :o"), {"o": org}
                )
            ).all()
        }
    import base64

    for account in (a, b):
        sealed = raw[account.user_id]
        assert account.totp_secret.encode() not in sealed
        assert base64.b32decode(account.totp_secret) not in sealed
        assert account.totp_secret.lower().encode() not in sealed
    user_a = await _user(db, a.user_id)
    assert sessions.totp_secret(db.settings, user_a) == a.totp_secret
    # One flipped bit anywhere breaks decryption.
    for position in (1, 13, len(raw[a.user_id]) - 1):
        tampered = bytearray(raw[a.user_id])
        tampered[position] ^= 0x01
        user_a.totp_secret_sealed = bytes(tampered)
        with pytest.raises(DecryptionError):
            sessions.totp_secret(db.settings, user_a)
    # Copying another user's sealed secret onto this user does not work either (bound to the user id).
    user_a.totp_secret_sealed = raw[b.user_id]
    with pytest.raises(DecryptionError):
        sessions.totp_secret(db.settings, user_a)
    # Nor does a different data key.
    user_a.totp_secret_sealed = raw[a.user_id]
    other_key = db.settings.model_copy(
        update={"data_key": SecretStr(base64.urlsafe_b64encode(b"k" * 32).decode())}
    )
    with pytest.raises(DecryptionError):
        sessions.totp_secret(other_key, user_a)


# ---- bearer tokens ----------------------------------------------------------------------------------------


async def _clinic(db: Database) -> tuple[int, Account, int]:
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    pid = await make_patient(db, org)
    assert isinstance(pid, int)
    assert doc.practitioner_id
    await add_to_care_team(db, patient_id=pid, practitioner_id=doc.practitioner_id, org_id=org)
    return org, doc, pid


async def test_token_scopes_are_enforced(client: httpx.AsyncClient, db: Database) -> None:
    _, doc, pid = await _clinic(db)
    read_only = await token_for(db, doc, ["user/Patient.r"])
    r = await client.get(f"/api/v1/patients/{pid}", headers=bearer(read_only))
    assert r.status_code == 200
    assert r.json()["id"] == pid
    r = await client.get("/api/v1/patients", headers=bearer(read_only))
    assert r.status_code == 403
    assert "search Patient" in r.json()["detail"]
    r = await client.patch(f"/api/v1/patients/{pid}", json={"city": "Erie"}, headers=bearer(read_only))
    assert r.status_code == 403
    r = await client.get(f"/api/v1/patients/{pid}/$export", headers=bearer(read_only))
    assert r.status_code == 403
    r = await client.get(f"/api/v1/patients/{pid}/care-team", headers=bearer(read_only))
    assert r.status_code == 403
    writer = await token_for(db, doc, ["user/Patient.rsu"])
    r = await client.patch(f"/api/v1/patients/{pid}", json={"city": "Erie"}, headers=bearer(writer))
    assert r.status_code == 200
    assert r.json()["city"] == "Erie"
    r = await client.get("/api/v1/patients", headers=bearer(writer))
    assert [p["id"] for p in r.json()["items"]] == [pid]


async def test_token_revocation_is_immediate_and_expiry_is_enforced(
    client: httpx.AsyncClient, db: Database
) -> None:
    org, doc, pid = await _clinic(db)
    admin = await make_user(db, org, Role.ADMIN)
    admin_token = await token_for(db, admin)
    token = await token_for(db, doc)
    assert (await client.get(f"/api/v1/patients/{pid}", headers=bearer(token))).status_code == 200
    token_id = int(token.split("_")[1])
    r = await client.delete(f"/api/v1/tokens/{token_id}", headers=bearer(admin_token))
    assert r.status_code == 204
    r = await client.get(f"/api/v1/patients/{pid}", headers=bearer(token))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert r.json()["code"] == "not_authenticated"
    # A token with a wrong secret but a valid id is refused too.
    forged = token.rsplit("_", 1)[0] + "_" + "A" * 43
    assert (await client.get("/api/v1/me", headers=bearer(forged))).status_code == 401

    # A one-day token, issued the way `telecare tokens create --expires-in-days 1` does.
    freeze_clock(utc_now())
    async with db.unit_of_work() as s:
        user = await s.get(User, doc.user_id)
        assert user is not None
        _, expiring = await auth_service.issue_token(
            s,
            system_principal(user.org_id),
            user_id=user.id,
            scopes=["user/*.cruds"],
            name="short",
            expires_in_days=1,
        )
    assert (await client.get(f"/api/v1/patients/{pid}", headers=bearer(expiring))).status_code == 200
    advance_clock(timedelta(days=1) - timedelta(seconds=5))
    assert (await client.get(f"/api/v1/patients/{pid}", headers=bearer(expiring))).status_code == 200
    advance_clock(timedelta(seconds=5))
    assert (await client.get(f"/api/v1/patients/{pid}", headers=bearer(expiring))).status_code == 401


# ---- disabling users and logout ---------------------------------------------------------------------------


async def test_disabling_a_user_revokes_every_session_and_token_at_once(
    client: httpx.AsyncClient, db: Database, app: Any
) -> None:
    org, doc, pid = await _clinic(db)
    admin = await make_user(db, org, Role.ADMIN)
    admin_token = await token_for(db, admin)
    tokens = [await token_for(db, doc), await token_for(db, doc, ["user/Patient.r"])]
    freeze_clock(utc_now())
    await web_login(client, doc)
    cookie = client.cookies[COOKIE]
    advance_clock(timedelta(seconds=30))  # a TOTP code is accepted once: the second browser needs the next
    # A second browser of the same user.
    second = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.2", 1)), base_url="http://testserver"
    )
    async with second:
        await _password_step(second, doc)
        assert (await _totp_step(second, doc)).status_code == 303
        second_cookie = second.cookies[COOKIE]
    assert (await _me(client, cookie)).status_code == 200
    assert (await _me(client, second_cookie)).status_code == 200
    for token in tokens:
        assert (await client.get(f"/api/v1/patients/{pid}", headers=bearer(token))).status_code == 200

    client.cookies.clear()
    r = await client.patch(
        f"/api/v1/users/{doc.user_id}", json={"is_active": False}, headers=bearer(admin_token)
    )
    assert r.status_code == 200
    assert r.json()["is_active"] is False

    assert (await _me(client, cookie)).status_code == 401
    assert (await _me(client, second_cookie)).status_code == 401
    for token in tokens:
        assert (await client.get(f"/api/v1/patients/{pid}", headers=bearer(token))).status_code == 401
    async with db.unit_of_work() as s:
        open_sessions = (
            await s.execute(
                select(WebSession).where(WebSession.user_id == doc.user_id, WebSession.revoked_at.is_(None))
            )
        ).all()
        open_tokens = (
            await s.execute(
                select(ApiToken).where(ApiToken.user_id == doc.user_id, ApiToken.revoked_at.is_(None))
            )
        ).all()
    assert open_sessions == []
    assert open_tokens == []
    # Re-enabling does not resurrect old credentials, and a fresh password login works again.
    client.cookies.clear()
    r = await client.patch(
        f"/api/v1/users/{doc.user_id}", json={"is_active": True}, headers=bearer(admin_token)
    )
    assert r.json()["is_active"] is True
    assert (await client.get(f"/api/v1/patients/{pid}", headers=bearer(tokens[0]))).status_code == 401
    assert (await _me(client, cookie)).status_code == 401


async def test_disabled_user_cannot_sign_in(client: httpx.AsyncClient, db: Database) -> None:
    org = await make_org(db)
    account = await make_patient(db, org, with_login=True)
    assert isinstance(account, Account)
    async with db.unit_of_work() as s:
        user = await s.get(User, account.user_id)
        assert user is not None
        user.is_active = False
    r = await login_post(client, {"email": account.email, "password": account.password})
    assert r.status_code == 401
    assert COOKIE not in r.cookies


async def test_logout_revokes_the_server_side_session(client: httpx.AsyncClient, db: Database) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    csrf = await web_login(client, nurse)
    cookie = client.cookies[COOKIE]
    # Without the CSRF token a cross-site logout only clears the cookie; the session survives.
    r = await client.post("/logout", data={})
    assert r.status_code == 303
    assert (await _me(client, cookie)).status_code == 200
    r = await client.post("/logout", data={"csrf_token": csrf}, headers=_with_cookie(client, cookie))
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert 'tc_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    # The old cookie value, replayed by someone who copied it, is dead server-side.
    r = await _me(client, cookie)
    assert r.status_code == 401
    async with db.unit_of_work() as s:
        record = (
            await s.execute(
                select(WebSession).where(WebSession.user_id == nurse.user_id, WebSession.mfa_verified)
            )
        ).scalar_one()
    assert record.revoked_at is not None
