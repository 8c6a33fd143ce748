"""The `telecare` command as an integrator runs it: a real subprocess against a real SQLite file and
PostgreSQL, with only TELECARE_* settings in its environment."""

from __future__ import annotations

import base64
import os
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest
from sqlalchemy import func, select, text

from telecare.audit.models import AuditEntry
from telecare.config import Mode, Settings
from telecare.core.db import Database
from telecare.identity.demo import DEMO_DOMAIN, demo_password
from telecare.identity.models import CareTeamMember, Patient, Role, User
from tests.factories import bearer, login_post, make_org, make_patient, make_user, token_for, web_login
from tests.subprocesses import SRC, run_cli, run_telecare

NEW_PASSWORD = "a long enough passphrase"


def _secret_from(stdout: str) -> str:
    found = re.search(r"TOTP secret: ([A-Z2-7]+)", stdout)
    assert found, stdout
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient, email: str, password: str, code: str | None) -> httpx.Response:
    r = await login_post(client, {"email": email, "password": password})
    assert r.status_code == 303, r.text
    if code is None:
        return r
    page = await client.get(r.headers["location"])
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    action = re.search(r'<form method="post" action="(/login/[^"]+)"', page.text)
    assert csrf
    assert action
    return await client.post(action.group(1), data={"code": code, "csrf_token": csrf.group(1)})


# ---- users ------------------------------------------------------------------------------------------------


async def test_users_create_staff_gets_a_working_totp_secret_and_patients_none(
    client: httpx.AsyncClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    await make_org(db)
    r = run_cli(
        settings,
        "users", "create", "--email", "New.Nurse@Clinic.test", "--role", "nurse", "--password-stdin",
        cwd=tmp_path, stdin=NEW_PASSWORD + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert re.search(r"^user \d+ created \(nurse\)$", r.stdout, re.M)
    secret = _secret_from(r.stdout)
    assert "otpauth://totp/Telecare:new.nurse%40clinic.test?secret=" + secret in r.stdout
    assert NEW_PASSWORD not in r.stdout + r.stderr
    # The printed secret and the password from stdin sign the new user in.
    r2 = await _sign_in(client, "new.nurse@clinic.test", NEW_PASSWORD, pyotp.TOTP(secret).now())
    assert r2.status_code == 303
    assert r2.headers["location"] == "/home"
    assert (await client.get("/api/v1/me")).json()["role"] == "nurse"

    r = run_cli(
        settings, "users", "create", "--email", "pat@clinic.test", "--role", "patient", "--password-stdin",
        cwd=tmp_path, stdin=NEW_PASSWORD + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "TOTP" not in r.stdout

    duplicate = ["--email", "NEW.NURSE@clinic.test", "--role", "admin", "--password-stdin"]
    r = run_cli(settings, "users", "create", *duplicate, cwd=tmp_path, stdin=NEW_PASSWORD + "\n")
    assert r.returncode == 1
    assert "Email already registered" in r.stderr
    async with db.unit_of_work() as s:
        emails = sorted((await s.execute(select(User.email))).scalars())
    assert emails == ["new.nurse@clinic.test", "pat@clinic.test"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--role", "surgeon"], NEW_PASSWORD, "unknown role 'surgeon'"),
        (["--role", "nurse"], "short", "at least 12 characters"),
    ],
)
def test_users_create_refuses_bad_input_before_touching_the_database(
    tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    env = _bare_env(TELECARE_DATABASE_URL=f"sqlite:///{tmp_path / 'never.db'}")
    command = ["users", "create", "--email", "x@clinic.test", *args, "--password-stdin"]
    r = run_telecare(*command, cwd=tmp_path, env=env, stdin=stdin + "\n")
    assert r.returncode == 1
    assert message in r.stderr
    assert not (tmp_path / "never.db").exists()


async def test_users_disable_revokes_sessions_and_tokens(
    client: httpx.AsyncClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    token = await token_for(db, nurse)
    await web_login(client, nurse)
    assert (await client.get("/api/v1/me")).status_code == 200
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 200
    r = run_cli(settings, "users", "disable", "--email", nurse.email.upper(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "sessions and tokens revoked" in r.stdout
    assert (await client.get("/api/v1/me")).status_code == 401
    client.cookies.clear()
    assert (await client.get("/api/v1/me", headers=bearer(token))).status_code == 401
    r = await login_post(client, {"email": nurse.email, "password": nurse.password})
    assert r.status_code == 401


# ---- patients import --------------------------------------------------------------------------------------

HEADER = "mrn,given_name,family_name,birth_date,sex,state,city,phone,care_team_emails\n"


async def test_patients_import_reports_bad_rows_by_line_and_imports_nothing(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    coord = await make_user(db, org, Role.COORDINATOR)
    existing = await make_patient(db, org, mrn="TAKEN-1")
    assert isinstance(existing, int)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + f"OK-1,Ana,Lee,1970-02-03,female,PA,Erie,,{doc.email}\n"  # line 2: fine
        + "OK-2,Bo,Kim,1970-13-40,male,NJ,,,\n"  # line 3: impossible date
        + "OK-3,Cy,Ng,1980-01-01,male,,,,\n"  # line 4: no state
        + f"OK-4,Di,Oz,1981-01-01,female,NY,,,{coord.email}\n"  # line 5: not a clinician
        + "OK-1,Ed,Py,1982-01-01,male,PA,,,\n"  # line 6: duplicate of line 2
        + "TAKEN-1,Fa,Qu,1983-01-01,female,PA,,,\n"  # line 7: already registered
        + "OK-8,Gi,Ru,1984-01-01,robot,PA,,,\n"  # line 8: bad sex code
    )
    before = await _counts(db)
    r = run_cli(settings, "patients", "import", str(bad), cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[-1] == "error: 6 error(s); nothing was imported"
    reported = {int(m.group(1)) for m in (re.match(r"line (\d+): ", x) for x in lines) if m}
    assert reported == {3, 4, 5, 6, 7, 8}
    assert any(x.startswith("line 3: birth_date:") for x in lines)
    assert any(x.startswith("line 4: state:") for x in lines)
    assert f"line 5: care_team_emails: {coord.email} is not a clinician here" in lines
    assert "line 6: mrn: duplicates line 2" in lines
    assert "line 7: mrn: already registered in this organization" in lines
    assert any(x.startswith("line 8: sex:") for x in lines)
    assert "Ana" not in r.stderr  # names never appear in error output
    assert await _counts(db) == before

    header_only = tmp_path / "missing.csv"
    header_only.write_text("mrn,given_name\nX,Y\n")
    r = run_cli(settings, "patients", "import", str(header_only), cwd=tmp_path)
    assert r.returncode == 1
    assert "line 1: missing column(s): birth_date, family_name, sex, state" in r.stderr


async def test_patients_import_good_file_creates_patients_with_care_teams(
    client: httpx.AsyncClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    nurse = await make_user(db, org, Role.NURSE)
    good = tmp_path / "good.csv"
    good.write_bytes(
        (
            HEADER
            + f"G-1,Ana,Lee,1970-02-03,female,pa,Erie,+1 555 0100,{doc.email.upper()}; {nurse.email}\n"
            + f"G-2,Bo,Kim,1971-03-04,male,NJ,Newark,,{nurse.email}\n"
            + "G-3,Cy,Ng,1980-01-01,other,NY,,,\n"
        ).encode("utf-8-sig")  # spreadsheet exports start with a BOM
    )
    before_audit = await _audit_count(db)
    r = run_cli(settings, "patients", "import", str(good), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "imported 3 patient(s)"
    async with db.unit_of_work() as s:
        patients = {
            p.mrn: p for p in (await s.execute(select(Patient).where(Patient.org_id == org))).scalars()
        }
        teams = (await s.execute(select(CareTeamMember.patient_id, CareTeamMember.practitioner_id))).all()
    assert sorted(patients) == ["G-1", "G-2", "G-3"]
    assert patients["G-1"].state == "PA"
    assert patients["G-1"].given_name == "Ana"
    by_patient: dict[int, set[int]] = {}
    for pid, prac in teams:
        by_patient.setdefault(pid, set()).add(prac)
    assert by_patient == {
        patients["G-1"].id: {doc.practitioner_id, nurse.practitioner_id},
        patients["G-2"].id: {nurse.practitioner_id},
    }
    assert await _audit_count(db) == before_audit + 3
    # The care team is live: the physician's token finds exactly their imported patient.
    token = await token_for(db, doc)
    r2 = await client.get("/api/v1/patients", headers=bearer(token))
    assert [p["mrn"] for p in r2.json()["items"]] == ["G-1"]
    # Importing the same file again is refused as a whole.
    r = run_cli(settings, "patients", "import", str(good), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.count("already registered") == 3


async def _counts(db: Database) -> tuple[int, int, int]:
    async with db.unit_of_work() as s:
        return (
            (await s.execute(select(func.count(Patient.id)))).scalar_one(),
            (await s.execute(select(func.count(CareTeamMember.id)))).scalar_one(),
            (await s.execute(select(func.count(AuditEntry.id)))).scalar_one(),
        )


async def _audit_count(db: Database) -> int:
    return (await _counts(db))[2]


# ---- tokens -----------------------------------------------------------------------------------------------


async def test_tokens_create_prints_a_working_scoped_token_last(
    client: httpx.AsyncClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    org = await make_org(db)
    coord = await make_user(db, org, Role.COORDINATOR)
    await make_patient(db, org)
    r = run_cli(
        settings, "tokens", "create", "--user", coord.email, "--scopes", "user/Patient.rs", "--name", "crm",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"tc_\d+_[A-Za-z0-9_-]{40,}", token)
    r2 = await client.get("/api/v1/patients", headers=bearer(token))
    assert r2.status_code == 200
    assert r2.json()["total"] == 1
    # The scopes printed are the scopes enforced: no create.
    body = {"mrn": "T-1", "given_name": "A", "family_name": "B", "birth_date": "1990-01-01", "sex": "male"}
    r2 = await client.post("/api/v1/patients", json=body | {"state": "PA"}, headers=bearer(token))
    assert r2.status_code == 403
    async with db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT token_hash FROM api_tokens"))).scalars().all()
    assert token.rsplit("_", 1)[1] not in "".join(stored)

    for args, message in [
        (["--user", coord.email, "--scopes", "Patient.read"], "invalid scope(s): Patient.read"),
        (["--user", "nobody@x.test", "--scopes", "user/*.r"], "no such user"),
    ]:
        r = run_cli(settings, "tokens", "create", *args, cwd=tmp_path)
        assert r.returncode == 1
        assert message in r.stderr


# ---- demo -------------------------------------------------------------------------------------------------


async def test_demo_loads_and_demo_totp_signs_in_a_demo_user_only(
    client: httpx.AsyncClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    r = run_cli(settings, "demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "demo organization loaded" in r.stdout
    email = f"dr.rivera@{DEMO_DOMAIN}"
    assert email in r.stdout
    assert demo_password("dr.rivera") in r.stdout
    async with db.unit_of_work() as s:
        assert (await s.execute(select(func.count(Patient.id)))).scalar_one() == 50
        roles = set((await s.execute(select(User.role))).scalars())
    assert roles == {str(role) for role in Role}

    r = run_cli(settings, "demo", "totp", email, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    code = r.stdout.strip()
    assert re.fullmatch(r"\d{6}", code)
    signed_in = await _sign_in(client, email, demo_password("dr.rivera"), code)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/home"
    home = await client.get("/home")
    assert home.status_code == 200
    assert "Dr. Elena Rivera" in home.text

    # Loading again changes nothing; --if-empty is quiet about it.
    r = run_cli(settings, "demo", cwd=tmp_path)
    assert "already loaded" in r.stdout
    r = run_cli(settings, "demo", "--if-empty", cwd=tmp_path)
    assert r.returncode == 0
    async with db.unit_of_work() as s:
        assert (await s.execute(select(func.count(Patient.id)))).scalar_one() == 50

    # A real organization's staff member: refused, and no code printed.
    org = await make_org(db)
    real = await make_user(db, org, Role.PHYSICIAN)
    r = run_cli(settings, "demo", "totp", real.email, cwd=tmp_path)
    assert r.returncode == 1
    assert "not a demo staff user" in r.stderr
    assert not re.search(r"\d{6}", r.stdout)


# ---- migrate ----------------------------------------------------------------------------------------------


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with no schema at all (not the migrated template)."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'telecare.db'}"
        return
    from tests.conftest import _pg_exec, _pg_url

    admin = request.getfixturevalue("pg_admin_url")
    if admin is None:
        from tests.conftest import skip_or_fail

        skip_or_fail("PostgreSQL unavailable")
    name = f"telecare_fresh_{uuid.uuid4().hex[:8]}"
    _pg_exec(admin, f"CREATE DATABASE {name}")
    try:
        yield _pg_url(admin, name)
    finally:
        _pg_exec(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_migrate_builds_the_schema_with_append_only_audit(
    empty_database_url: str, settings: Settings, tmp_path: Path
) -> None:
    fresh = settings.model_copy(update={"database_url": empty_database_url})
    r = run_cli(fresh, "migrate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "database is up to date" in r.stdout
    r = run_cli(fresh, "migrate", cwd=tmp_path)  # idempotent
    assert r.returncode == 0, r.stderr
    db = Database(fresh)
    try:
        async with db.engine.connect() as conn:
            versions = set((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())
            assert versions == _script_heads()
            count = (await conn.execute(text("SELECT COUNT(*) FROM audit_entries"))).scalar_one()
            assert count == 0
        r = run_cli(fresh, "orgs-create", "--name", "Clinic", "--slug", "clinic", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        r = run_cli(fresh, "users", "create", "--email", "a@b.test", "--role", "admin", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        with pytest.raises(Exception, match="append-only"):
            async with db.engine.begin() as conn:
                await conn.execute(text("DELETE FROM audit_entries"))
    finally:
        await db.dispose()


def _script_heads() -> set[str]:
    from alembic.script import ScriptDirectory

    from telecare.core.migrate import alembic_config

    return set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


# ---- init-env and production secrets ----------------------------------------------------------------------


def _bare_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")}
    env.update(PYTHONPATH=str(SRC), **extra)
    return env


def test_init_env_writes_fresh_secrets_once_and_never_overwrites(tmp_path: Path) -> None:
    r = run_telecare("init-env", cwd=tmp_path, env=_bare_env())
    assert r.returncode == 0, r.stderr
    env_file = tmp_path / ".env"
    assert r.stdout.strip() == "wrote .env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    first = env_file.read_text()
    values = dict(line.split("=", 1) for line in first.splitlines() if line and not line.startswith("#"))
    assert set(values) == {"TELECARE_SESSION_SECRET", "TELECARE_AUDIT_HMAC_KEY", "TELECARE_DATA_KEY"}
    assert len(base64.urlsafe_b64decode(values["TELECARE_DATA_KEY"] + "==")) == 32
    assert len(set(values.values())) == 3
    # The file satisfies production mode.
    loaded = Settings(mode=Mode.PRODUCTION, _env_file=env_file)  # type: ignore[call-arg]
    assert loaded.secret("audit_hmac_key") == values["TELECARE_AUDIT_HMAC_KEY"]

    r = run_telecare("init-env", cwd=tmp_path, env=_bare_env())
    assert r.returncode == 0
    assert "exists; keeping it" in r.stdout
    assert env_file.read_text() == first
    other = tmp_path / "other.env"
    other.write_text("TELECARE_SESSION_SECRET=mine\n")
    r = run_telecare("init-env", "--path", str(other), cwd=tmp_path, env=_bare_env())
    assert other.read_text() == "TELECARE_SESSION_SECRET=mine\n"
    # A second directory gets different secrets.
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    run_telecare("init-env", cwd=elsewhere, env=_bare_env())
    assert (elsewhere / ".env").read_text() != first


SECRETS = {
    "TELECARE_SESSION_SECRET": "s" * 48,
    "TELECARE_AUDIT_HMAC_KEY": "a" * 48,
    "TELECARE_DATA_KEY": base64.urlsafe_b64encode(b"d" * 32).decode(),
}


@pytest.mark.parametrize("missing", [*SECRETS, "all"])
def test_production_mode_refuses_to_start_without_each_secret(tmp_path: Path, missing: str) -> None:
    given = {} if missing == "all" else {k: v for k, v in SECRETS.items() if k != missing}
    env = _bare_env(
        TELECARE_MODE="production",
        TELECARE_DATABASE_URL=f"sqlite:///{tmp_path / 'prod.db'}",
        TELECARE_PORT="1",  # never reached: it must refuse before binding
        **given,
    )
    r = run_telecare("serve", cwd=tmp_path, env=env)
    assert r.returncode != 0
    output = r.stdout + r.stderr
    assert "production mode requires" in output
    expected = list(SECRETS) if missing == "all" else [missing]
    for name in SECRETS:
        assert (name in output.split("production mode requires", 1)[1].splitlines()[0]) == (name in expected)
    if missing == "all":
        r = run_telecare("migrate", cwd=tmp_path, env=env)
        assert r.returncode != 0
        assert "production mode requires" in r.stderr
    assert not (tmp_path / "prod.db").exists()


def test_production_mode_starts_with_all_three_secrets(tmp_path: Path) -> None:
    env = _bare_env(
        TELECARE_MODE="production", TELECARE_DATABASE_URL=f"sqlite:///{tmp_path / 'prod.db'}", **SECRETS
    )
    r = run_telecare("migrate", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "prod.db").exists()


async def test_every_writing_command_acts_as_the_audited_system(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """The CLI is a surface like the API: each command that changes something goes through an action and
    leaves an audit entry by the named system actor (tests/test_architecture.py checks no command writes
    behind an action's back)."""

    async def entries(resource_type: str) -> list[AuditEntry]:
        async with db.unit_of_work() as s:
            rows = await s.execute(
                select(AuditEntry).where(AuditEntry.resource_type == resource_type).order_by(AuditEntry.id)
            )
            return list(rows.scalars())

    r = run_cli(settings, "orgs-create", "--name", "North Clinic", "--slug", "north", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (org_entry,) = await entries("Organization")
    r = run_cli(settings, "orgs-create", "--name", "Again", "--slug", "north", cwd=tmp_path)
    assert r.returncode != 0
    assert "slug" in r.stderr
    r = run_cli(
        settings, "users", "create", "--email", "md@north.test", "--role", "physician", "--org", "north",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli(
        settings, "tokens", "create", "--user", "md@north.test", "--scopes", "user/Patient.rs", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    tokens = await entries("ApiToken")
    r = run_cli(settings, "tokens", "revoke", tokens[0].resource_id or "", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli(settings, "users", "disable", "--email", "md@north.test", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = [org_entry, *await entries("User"), *await entries("ApiToken")]
    assert [(e.resource_type, e.action) for e in written] == [
        ("Organization", "create"),
        ("User", "create"),
        ("User", "update"),  # disabled
        ("ApiToken", "create"),
        ("ApiToken", "delete"),
    ]
    assert {(e.actor_kind, e.actor_role, e.actor_user_id) for e in written} == {("system", "system", None)}
    assert {e.org_id for e in written} == {org_entry.org_id}
