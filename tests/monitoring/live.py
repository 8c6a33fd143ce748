"""A real server process (uvicorn) on the test database, for kill and browser tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from telecare.config import Settings
from tests.subprocesses import SRC


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, settings: Settings, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(SRC),  # this checkout's code, not whichever the venv has installed
            "TELECARE_DATABASE_URL": settings.database_url,
            "TELECARE_DATA_DIR": str(tmp),
            "TELECARE_BASE_URL": self.base,
            "TELECARE_SESSION_SECRET": settings.secret("session_secret"),
            "TELECARE_AUDIT_HMAC_KEY": settings.secret("audit_hmac_key"),
            "TELECARE_DATA_KEY": settings.secret("data_key"),
            "TELECARE_LOG_LEVEL": "WARNING",
            "TELECARE_RPM_BACKGROUND_INTERVAL_SECONDS": "0",
            **env,
        }
        self.cwd = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "telecare.asgi:app", "--port", str(self.port)]
        cmd += ["--no-access-log", "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.cwd)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no after-commit callbacks."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
