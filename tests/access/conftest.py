"""Module-scoped databases for the matrix-style tests: the world is built once per backend per module and
hundreds of cases run against it. (tests/conftest.py gives each test its own fresh database, which is the
right default but too slow for ~2,600 cases.)"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from telecare.config import Settings
from tests.access.matrix_kit import World, build_world
from tests.conftest import BACKENDS, fresh_database_url, make_settings

# Every tests/<domain>/probes.py registers its targets, probes and world additions on import.
for _path in sorted(Path(__file__).resolve().parents[1].glob("*/probes.py")):
    importlib.import_module(f"tests.{_path.parent.name}.probes")

_counter = itertools.count()


@pytest.fixture(scope="module", params=BACKENDS)
def module_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from fresh_database_url(str(request.param), tmp_path_factory.mktemp("matrix"), request)


@pytest.fixture(scope="module")
def module_settings(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(module_database_url, tmp_path_factory.mktemp("data"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_app(module_settings: Settings) -> AsyncIterator[Any]:
    from telecare.app import create_app

    application = create_app(module_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_client(module_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=module_app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_db(module_settings: Settings) -> AsyncIterator[Any]:
    from telecare.core.db import Database
    from telecare.domains import install as install_domains

    install_domains()
    database = Database(module_settings)
    try:
        yield database
    finally:
        await database.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(module_db: Any, module_client: httpx.AsyncClient) -> AsyncIterator[World]:
    """Two organizations with a user per role, patients, care teams, tokens, audit entries and grants."""
    yield await build_world(module_db, module_client)
