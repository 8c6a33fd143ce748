"""Fixtures shared by the identity tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from telecare.config import Settings


@pytest.fixture
async def app_with(settings: Settings) -> AsyncIterator[Any]:
    """Build an app with some settings changed (tight limits) on the same test database."""
    from telecare.app import create_app

    async with contextlib.AsyncExitStack() as stack:

        async def build(**changes: Any) -> httpx.AsyncClient:
            application = create_app(settings.model_copy(update=changes))
            await stack.enter_async_context(application.router.lifespan_context(application))
            return httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application, client=("198.51.100.7", 40000)),
                base_url="http://testserver",
            )

        yield build
