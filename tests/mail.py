"""A real SMTP server (aiosmtpd) on a free local port for tests that check the mail Telecare sends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[list[Any], int]]:
    """(the envelopes received so far, the port); the server stops when the block ends."""
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield received, controller.port
    finally:
        controller.stop()


async def wait_for_mail(received: list[Any], *, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if received:
            return
        await asyncio.sleep(0.05)
