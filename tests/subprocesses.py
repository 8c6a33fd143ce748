"""Run the real `telecare` command and server as subprocesses against a test database.

The child gets only the settings given here (no TELECARE_* from the parent, no .env: it runs in a temp
directory) and imports Telecare from this checkout's src/."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from telecare.config import Settings

SRC = Path(__file__).resolve().parents[1] / "src"


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECARE_")}
    env.update(
        PYTHONPATH=str(SRC),
        TELECARE_MODE="test",
        TELECARE_DATABASE_URL=settings.database_url,
        TELECARE_SESSION_SECRET=settings.secret("session_secret"),
        TELECARE_AUDIT_HMAC_KEY=settings.secret("audit_hmac_key"),
        TELECARE_DATA_KEY=settings.secret("data_key"),
        TELECARE_LOG_LEVEL="WARNING",
        TELECARE_ARGON2_TIME_COST=str(settings.argon2_time_cost),
        TELECARE_ARGON2_MEMORY_KIB=str(settings.argon2_memory_kib),
        TELECARE_ARGON2_PARALLELISM=str(settings.argon2_parallelism),
    )
    env.update(extra)
    return env


def run_telecare(
    *args: str, cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m telecare ARGS` with exactly `env`."""
    return subprocess.run(
        [sys.executable, "-m", "telecare", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def run_cli(
    settings: Settings, *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m telecare ARGS` with the test database and secrets in its environment."""
    return run_telecare(*args, cwd=cwd, env=env if env is not None else cli_env(settings), stdin=stdin)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing beyond what was already committed."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def start_server(settings: Settings, *, cwd: Path, extra_env: dict[str, str] | None = None) -> Server:
    """`python -m telecare serve` on a free loopback port; returns once /healthz answers."""
    port = free_port()
    log = cwd / f"server-{port}.log"
    env = cli_env(settings, **(extra_env or {}))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "telecare", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return Server(process, base, log)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def running_server(settings: Settings, *, cwd: Path) -> Iterator[Server]:
    server = start_server(settings, cwd=cwd)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
