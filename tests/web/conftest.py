"""Browser tests: Debian's Chromium driven by Playwright (sync API) against the real server.

The server runs as a subprocess (`python -m telecare serve` on a free loopback port) over a database filled
by the real `telecare migrate` and `telecare demo` commands, once on SQLite and once on PostgreSQL. These
tests are synchronous: Playwright's sync API owns its own event loop, which async pytest tests would fight.
Screenshots go to test-artifacts/ (gitignored)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest

from telecare.auth.sessions import TOTP_INTERVAL
from telecare.config import Mode, Settings
from telecare.identity.demo import DEMO_DOMAIN, demo_password, demo_totp_secret
from tests.conftest import _pg_exec, _pg_url, skip_or_fail
from tests.subprocesses import Server, run_cli, running_server

CHROMIUM = "/usr/bin/chromium"
# docs/browser-tests.md#chromium-flags: headless as root, fake media, no background networking.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.browser


@dataclass
class DemoServer:
    """A running Telecare server with the demo organization loaded."""

    backend: str
    server: Server
    settings: Settings
    workdir: Path
    # Last TOTP step used per email: the server rejects a replayed code; each sign-in needs a newer one.
    _last_step: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.base_url

    def totp(self, email: str) -> str:
        """A code the server has not seen for this user yet (waits for the next step when needed)."""
        totp = pyotp.TOTP(demo_totp_secret(email), interval=TOTP_INTERVAL)
        now_step = int(time.time()) // TOTP_INTERVAL
        step = max(now_step, self._last_step.get(email, -1) + 1)
        if step > now_step + 1:  # beyond the one step of drift the server accepts: wait for it
            time.sleep((step - 1) * TOTP_INTERVAL - time.time() + 0.5)
        self._last_step[email] = step
        return totp.generate_otp(step)

    def last_code(self, email: str) -> str:
        return pyotp.TOTP(demo_totp_secret(email), interval=TOTP_INTERVAL).generate_otp(
            self._last_step[email]
        )

    def cli(self, *args: str) -> str:
        result = run_cli(self.settings, *args, cwd=self.workdir)
        assert result.returncode == 0, result.stderr
        return result.stdout


def demo_email(local: str) -> str:
    return f"{local}@{DEMO_DOMAIN}"


def demo_pw(local: str) -> str:
    return demo_password(local)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def demo_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoServer]:
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"web-{backend}")
    pg_name = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'telecare.db'}"
    else:
        admin = request.getfixturevalue("pg_admin_url")
        if admin is None:
            skip_or_fail("PostgreSQL unavailable: install pgserver or set TELECARE_TEST_POSTGRES_URL")
        pg_name = f"telecare_web_{uuid.uuid4().hex[:8]}"
        _pg_exec(admin, f"CREATE DATABASE {pg_name}")
        url = _pg_url(admin, pg_name)
    settings = Settings(
        mode=Mode.TEST,
        database_url=url,
        data_dir=workdir / "data",
        session_secret="web-test-session-secret-" + "s" * 32,  # type: ignore[arg-type]
        audit_hmac_key="web-test-audit-key-" + "a" * 32,  # type: ignore[arg-type]
        _env_file=None,
    )  # type: ignore[call-arg]
    for args in (("migrate",), ("demo",)):
        result = run_cli(settings, *args, cwd=workdir)
        assert result.returncode == 0, result.stderr
    try:
        with running_server(settings, cwd=workdir) as server:
            yield DemoServer(backend, server, settings, workdir)
    finally:
        if pg_name is not None:
            with contextlib.suppress(Exception):
                _pg_exec(request.getfixturevalue("pg_admin_url"), f"DROP DATABASE {pg_name} WITH (FORCE)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module scope on purpose: while Playwright's sync API is running it owns the thread's event loop, so
    it must be closed before any async test (pytest-asyncio) runs after the browser tests."""
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        skip_or_fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A browser context (its own cookie jar) with one page; collects console errors (CSP violations
    show up there) and saves screenshots named after the test."""

    def __init__(self, browser: Any, server: DemoServer, name: str) -> None:
        self.context = browser.new_context(base_url=server.url)
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.server = server
        self.name = name
        self.console_errors: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))

    def _on_console(self, msg: Any) -> None:
        # A 403/404 page is an expected "failed resource"; a CSP violation or a script error is not.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.console_errors.append(msg.text)

    def shot(self, step: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.name}-{self.server.backend}-{step}")
        self.page.screenshot(path=str(ARTIFACTS / f"{safe}.png"), full_page=True)

    def sign_in(self, local: str, *, expect: str = "home") -> None:
        """Password, then the TOTP step a staff user is sent to (enrolment or challenge)."""
        page = self.page
        page.goto("/login")
        page.get_by_label("Email").fill(demo_email(local))
        page.get_by_label("Password").fill(demo_pw(local))
        page.get_by_role("button", name="Sign in").click()
        if expect == "password-only":
            page.wait_for_url("**/home")
            return
        page.wait_for_url(re.compile(r"/login/(enrol|totp)$"))
        page.get_by_label(re.compile("6-digit code")).fill(self.server.totp(demo_email(local)))
        page.get_by_role("button", name=re.compile("Confirm|Verify")).click()
        page.wait_for_url("**/home")

    def sign_out(self) -> None:
        self.page.get_by_role("button", name="Sign out").click()
        self.page.wait_for_url("**/login")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser: Any, demo_server: DemoServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Factory of isolated browser tabs; on teardown asserts no page logged a console error."""
    opened: list[Tab] = []

    def open_tab(label: str = "") -> Tab:
        tab = Tab(browser, demo_server, f"{request.node.originalname}{'-' + label if label else ''}")
        opened.append(tab)
        return tab

    yield open_tab
    errors = [f"{t.name}: {e}" for t in opened for e in t.console_errors]
    for tab in opened:
        tab.close()
    assert not errors, errors
