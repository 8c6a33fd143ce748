"""Blob back ends for the stored-file tests: every test that takes `blob_backend` runs on the filesystem
store and on an S3-compatible store, a real moto server on a free local port (started once per session,
each test in its own key prefix)."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from telecare.config import Settings
from telecare.core.blobs import BlobStore, open_blob_store
from tests.conftest import make_settings, skip_or_fail

BLOB_BACKENDS = ["filesystem", "s3"]
BUCKET = "telecare-test"
S3_KEY, S3_SECRET = "testing-key", "testing-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str | None]:
    """The URL of a moto S3 server for the session, with the test bucket created; None without moto."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
        )
        client.create_bucket(Bucket=BUCKET)
        client.close()
        yield url
    finally:
        with contextlib.suppress(Exception):
            server.stop()


@pytest.fixture(params=BLOB_BACKENDS)
def blob_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def blob_overrides(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if backend == "filesystem":
        return {"blob_backend": "filesystem"}
    endpoint = request.getfixturevalue("s3_endpoint")
    if endpoint is None:
        skip_or_fail("moto is not installed (pip install 'moto[server]'): no S3-compatible server")
    return {
        "blob_backend": "s3",
        "s3_endpoint_url": endpoint,
        "s3_bucket": BUCKET,
        "s3_access_key_id": S3_KEY,
        "s3_secret_access_key": S3_SECRET,
        "s3_prefix": f"t{uuid.uuid4().hex[:12]}/",  # each test sees only its own objects
    }


@pytest.fixture
def blob_settings(blob_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for the store alone (no database)."""
    return make_settings(
        "sqlite+aiosqlite:///:memory:", tmp_path / "data", **blob_overrides(blob_backend, request)
    )


@pytest.fixture
async def store(blob_settings: Settings) -> AsyncIterator[BlobStore]:
    blobs = open_blob_store(blob_settings)
    try:
        yield blobs
    finally:
        await blobs.stop()


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, blob_backend: str, request: pytest.FixtureRequest
) -> Settings:
    """The database tests' settings (tests/conftest.py), on each blob back end."""
    return make_settings(database_url, tmp_path / "data", **blob_overrides(blob_backend, request))
