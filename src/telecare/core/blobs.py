"""Blob stores: where stored files' bytes live, once they are encrypted (docs/files.md#back-ends).

A store knows nothing of patients, files or keys: it keeps opaque byte strings under keys the server
generated (`new_storage_key`, 32 lower-case hex characters), never a name derived from anything a client
sent. Two back ends: the filesystem under `data_dir/blobs` (the default) and an S3-compatible object store.
Both are used through `blob_store(uow)`, one per process (a unit-of-work component)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from telecare.config import BlobBackend, Settings

if TYPE_CHECKING:
    from telecare.core.db import UnitOfWork

log = logging.getLogger(__name__)

_KEY = re.compile(r"[0-9a-f]{32}")


class BlobMissing(LookupError):
    """No blob is stored under the key."""


class InvalidBlobKey(ValueError):
    """A key that the server did not generate (the stores accept nothing else, so no path is ever built
    from outside input)."""


def new_storage_key() -> str:
    """128 random bits as 32 hex characters: unguessable and free of any client-supplied text."""
    return secrets.token_hex(16)


def check_key(key: str) -> str:
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise InvalidBlobKey("not a server-generated storage key")
    return key


@dataclass(frozen=True)
class BlobInfo:
    key: str
    modified_at: datetime


@runtime_checkable
class BlobStore(Protocol):
    """Opaque bytes under server-generated keys. `put` is durable when it returns; `delete` of a missing
    key is not an error; `get` of a missing key raises `BlobMissing`."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...

    def keys(self) -> AsyncIterator[BlobInfo]:
        """Every stored key with its last modification time (the orphan sweep, docs/files.md#orphans)."""
        ...

    async def stop(self) -> None: ...


# ---- filesystem ------------------------------------------------------------------------------------------


class FilesystemBlobStore:
    """Blobs as files under `root`, sharded two levels deep by the key's first four hex digits
    (`root/ab/cd/abcd...`) so no directory grows past a few thousand entries.

    A write goes to a temporary file in the final directory, is fsynced, renamed over the final name and
    the directory is fsynced (docs/files.md#durability): after `put` returns, a crash leaves either the
    whole blob or none. Files and directories are private to the server's user (0600 / 0700)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:2] / key[2:4] / key

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, self.path_of(key), data)

    def _put(self, path: Path, data: bytes) -> None:
        created: list[Path] = []
        if not self.root.is_dir():
            self.root.mkdir(parents=True, mode=0o700, exist_ok=True)
            created.append(self.root)
        created += _make_dirs(path.parent, stop=self.root)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(path.parent)
        for directory in created:  # a new shard directory's own entry is in its parent
            _fsync_dir(directory.parent)

    async def get(self, key: str) -> bytes:
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobMissing(key) from None

    async def delete(self, key: str) -> None:
        path = self.path_of(key)

        def remove() -> None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            _fsync_dir(path.parent)

        await asyncio.to_thread(remove)

    async def keys(self) -> AsyncIterator[BlobInfo]:
        def scan() -> list[BlobInfo]:
            if not self.root.is_dir():
                return []
            found = []
            for path in self.root.glob("*/*/*"):
                if _KEY.fullmatch(path.name) and path.parent.parent.parent == self.root:
                    mtime = path.stat().st_mtime
                    found.append(BlobInfo(path.name, datetime.fromtimestamp(mtime, UTC)))
            return found

        for info in await asyncio.to_thread(scan):
            yield info

    async def stop(self) -> None:
        return None


def _make_dirs(directory: Path, *, stop: Path) -> list[Path]:
    """Create `directory` and its missing parents (0700); return those created, outermost first."""
    missing: list[Path] = []
    current = directory
    while not current.exists() and current != stop and current.parent != current:
        missing.append(current)
        current = current.parent
    created: list[Path] = []
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another upload made it first
            path.mkdir(mode=0o700)
            created.append(path)
    return created


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- S3-compatible object store --------------------------------------------------------------------------


class S3BlobStore:
    """Blobs as objects `prefix + key` in one bucket of an S3-compatible store (AWS S3, MinIO, Ceph...).

    boto3's calls block, so each runs in a worker thread (a boto3 client is thread-safe; one is shared by
    the process). Why boto3 and not aiobotocore: docs/files.md#back-ends. A PUT to S3 is atomic: an object
    is visible whole or not at all, and it is durable when the call returns."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "blobs/",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                signature_version="s3v4",
                # Path-style requests work with every S3-compatible server (MinIO, moto, Ceph).
                s3={"addressing_style": "path"},
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def put(self, key: str, data: bytes) -> None:
        name = self._name(key)
        await asyncio.to_thread(
            self._client.put_object,
            Bucket=self.bucket,
            Key=name,
            Body=data,
            ContentType="application/octet-stream",
        )

    async def get(self, key: str) -> bytes:
        name = self._name(key)

        def fetch() -> bytes:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=name)
            except self._client.exceptions.NoSuchKey:
                raise BlobMissing(key) from None
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return await asyncio.to_thread(fetch)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=self._name(key))

    async def keys(self) -> AsyncIterator[BlobInfo]:
        def scan() -> list[BlobInfo]:
            found = []
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self.prefix) :]
                    if _KEY.fullmatch(key):
                        modified = item["LastModified"]
                        found.append(BlobInfo(key, modified.astimezone(UTC)))
            return found

        for info in await asyncio.to_thread(scan):
            yield info

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def open_blob_store(settings: Settings) -> BlobStore:
    """The store the settings name (TELECARE_BLOB_BACKEND)."""
    if settings.blob_backend is BlobBackend.S3:
        assert settings.s3_bucket is not None  # Settings refuses s3 without a bucket
        secret = settings.s3_secret_access_key
        return S3BlobStore(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    return FilesystemBlobStore(Path(settings.data_dir) / "blobs")


class _StoreSlot:
    """The unit-of-work component holding the process's store (created on first use, stopped with the
    database)."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    async def stop(self) -> None:
        await self.store.stop()


def blob_store(uow: UnitOfWork) -> BlobStore:
    """The process's blob store, as configured by the unit of work's settings."""
    return uow.component(_StoreSlot, lambda: _StoreSlot(open_blob_store(uow.settings))).store
