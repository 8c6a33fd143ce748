"""Test harness: every database test runs on SQLite (a real file) and on PostgreSQL (pgserver, or the server
named by TELECARE_TEST_POSTGRES_URL). The schema is built by the migrations once per backend into a
template; each test gets a fresh copy."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telecare.config import Mode, Settings
from telecare.core import migrate
from telecare.core.db import Database
from telecare.core.time import reset_clock

REQUIRE_ALL = os.environ.get("TELECARE_REQUIRE_ALL") == "1"
BACKENDS = ["sqlite", "postgresql"]
_counter = itertools.count()


def skip_or_fail(reason: str) -> None:
    """Skip locally when a component is missing; fail in CI (TELECARE_REQUIRE_ALL=1)."""
    if REQUIRE_ALL:
        pytest.fail(f"required component missing (TELECARE_REQUIRE_ALL=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """A PostgreSQL server for the session: TELECARE_TEST_POSTGRES_URL, or pgserver in a temp dir."""
    env = os.environ.get("TELECARE_TEST_POSTGRES_URL")
    if env:
        yield env
        return
    try:
        import pgserver
    except ImportError:
        yield None
        return
    datadir = tmp_path_factory.mktemp("pg")
    server = pgserver.get_server(str(datadir), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        with contextlib.suppress(Exception):
            server.cleanup()


def _pg_url(admin_url: str, dbname: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(admin_url.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.set(database=dbname).render_as_string(hide_password=False)


def _pg_exec(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str | None) -> str | None:
    if pg_admin_url is None:
        return None
    name = f"telecare_tpl_{uuid.uuid4().hex[:8]}"
    _pg_exec(pg_admin_url, f"CREATE DATABASE {name}")
    migrate.upgrade(_pg_url(pg_admin_url, name))
    return name


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fresh_database_url(backend: str, directory: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database copied from the backend's template; dropped afterwards (PostgreSQL)."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = directory / "telecare.db"
        shutil.copyfile(template, target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    admin = request.getfixturevalue("pg_admin_url")
    template_name = request.getfixturevalue("pg_template")
    if admin is None or template_name is None:
        skip_or_fail("PostgreSQL unavailable: install pgserver or set TELECARE_TEST_POSTGRES_URL")
    name = f"telecare_t{os.getpid()}_{next(_counter)}"
    _pg_exec(admin, f"CREATE DATABASE {name} TEMPLATE {template_name}")
    try:
        yield _pg_url(admin, name)
    finally:
        with contextlib.suppress(Exception):
            _pg_exec(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from fresh_database_url(backend, tmp_path, request)


# argon2id at its cheapest for test users (about 1 ms a hash instead of 30 ms: the suite hashes and verifies
# thousands of passwords). The production parameters are the Settings defaults; tests/identity/
# test_authentication.py runs with them and checks every stored hash against the OWASP minimum.
FAST_ARGON2: dict[str, Any] = {"argon2_time_cost": 1, "argon2_memory_kib": 1024}


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """The settings every test app runs with, plus `overrides` (e.g. smtp_port, max_body_bytes)."""
    return Settings(
        mode=Mode.TEST,
        database_url=database_url,
        data_dir=data_dir,
        session_secret="test-session-secret-" + "x" * 32,  # type: ignore[arg-type]
        audit_hmac_key="test-audit-key-" + "y" * 32,  # type: ignore[arg-type]
        _env_file=None,
        **{**FAST_ARGON2, **overrides},
    )  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture(autouse=True)
def _audit_guard() -> Iterator[None]:
    """Fail any test during which a change to patient data committed without an audit entry in the same
    transaction (telecare/audit/guard.py). Set-up code opens its units of work with
    `tests.factories.setup_uow` (`GUARD.exempt(uow, reason)`)."""
    from telecare.audit.guard import GUARD

    GUARD.install()
    before = GUARD.take()  # committed by module- or session-scoped set-up, or by a job between tests
    if before:
        pytest.fail(
            "audit guard, before this test:\n" + "\n".join(str(v) for v in before[:20]), pytrace=False
        )
    yield
    found = GUARD.take()
    if found:
        pytest.fail("audit guard:\n" + "\n".join(str(v) for v in found[:20]), pytrace=False)


@pytest.fixture(autouse=True)
def _real_clock() -> Iterator[None]:
    reset_clock()
    yield
    reset_clock()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    from telecare.domains import install as install_domains

    install_domains()
    database = Database(settings)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    from telecare.app import create_app

    application = create_app(settings)
    # In-process tests seal each unit of work's audit entries right after it commits, as a CLI command does:
    # a background sealer's SQLite write transaction would stay open while a test blocks the event loop on a
    # subprocess (`run_cli`), and lock it out. The background sealer is tested in tests/audit/test_sealer.py
    # and runs in every test that starts a real server.
    application.state.db.seal_in_background = False
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
