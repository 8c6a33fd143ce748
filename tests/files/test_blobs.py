"""The blob stores (filesystem and a real S3-compatible server) and the envelope encryption over them
(docs/files.md#back-ends, docs/files.md#encryption). No database here: tests/files/test_service.py covers
the actions."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from telecare.config import Settings
from telecare.core.blobs import (
    BlobMissing,
    BlobStore,
    FilesystemBlobStore,
    InvalidBlobKey,
    new_storage_key,
    open_blob_store,
)
from telecare.files import envelope
from tests.files import images

MASTER = os.urandom(32)


def _binding(data: bytes, key: str, file_id: str = "f" * 32, patient_id: int = 7) -> envelope.Binding:
    return envelope.Binding(
        file_id=file_id,
        org_id=1,
        patient_id=patient_id,
        storage_key=key,
        content_type="image/jpeg",
        byte_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def test_round_trip_delete_and_listing(store: BlobStore) -> None:
    key = new_storage_key()
    assert len(key) == 32
    assert int(key, 16) >= 0
    await store.put(key, b"payload")
    assert await store.get(key) == b"payload"
    assert [info.key async for info in store.keys()] == [key]
    await store.delete(key)
    await store.delete(key)  # deleting twice is not an error
    with pytest.raises(BlobMissing):
        await store.get(key)
    assert [info.key async for info in store.keys()] == []


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 32, "0" * 31, "0" * 32 + "/x", "", "..%2f" * 8])
async def test_keys_the_server_did_not_make_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKey):
        await store.put(key, b"x")
    with pytest.raises(InvalidBlobKey):
        await store.get(key)


async def test_envelope_round_trip_and_no_plaintext_in_storage(
    store: BlobStore, blob_settings: Settings
) -> None:
    photo = images.jpeg()
    pixel_run = photo[len(photo) // 2 : len(photo) // 2 + 32]  # a run of entropy-coded pixel data
    key = new_storage_key()
    binding = _binding(photo, key)
    ciphertext, wrapped = envelope.seal_object(MASTER, photo, binding, owner_kind=None, owner_id=None)
    await store.put(key, ciphertext)
    raw = await _raw(store, blob_settings, key)
    assert raw == ciphertext
    assert images.JFIF_HEADER not in raw
    assert not raw.startswith(b"\xff\xd8")
    assert pixel_run not in raw
    assert photo[:64] not in raw
    assert MASTER not in wrapped
    opened = envelope.open_object(
        MASTER, await store.get(key), wrapped, binding, owner_kind=None, owner_id=None
    )
    assert opened == photo


async def _raw(store: BlobStore, settings: Settings, key: str) -> bytes:
    """The bytes as they sit in the back end: the file on disk, or the object fetched with a plain S3
    client (not through the store)."""
    if isinstance(store, FilesystemBlobStore):
        path = Path(settings.data_dir) / "blobs" / key[:2] / key[2:4] / key
        assert path.is_file()
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        return path.read_bytes()
    import boto3

    secret = settings.s3_secret_access_key
    assert secret is not None
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value(),
    )
    try:
        body = client.get_object(Bucket=settings.s3_bucket, Key=settings.s3_prefix + key)["Body"]
        return bytes(body.read())
    finally:
        client.close()


async def test_a_flipped_byte_in_the_store_is_refused(store: BlobStore) -> None:
    data = images.png()
    key = new_storage_key()
    binding = _binding(data, key)
    ciphertext, wrapped = envelope.seal_object(MASTER, data, binding, owner_kind=None, owner_id=None)
    for position in (0, 20, len(ciphertext) // 2, len(ciphertext) - 1):
        tampered = bytearray(ciphertext)
        tampered[position] ^= 0x01
        await store.put(key, bytes(tampered))
        with pytest.raises(envelope.IntegrityFailure):
            envelope.open_object(
                MASTER, await store.get(key), wrapped, binding, owner_kind=None, owner_id=None
            )
    await store.put(key, ciphertext[:-1])  # truncated
    with pytest.raises(envelope.IntegrityFailure):
        envelope.open_object(MASTER, await store.get(key), wrapped, binding, owner_kind=None, owner_id=None)


async def test_swapped_objects_and_swapped_keys_are_refused(store: BlobStore) -> None:
    a_data, b_data = images.jpeg(images.picture((64, 64))), images.jpeg(images.picture((80, 60)))
    a_key, b_key = new_storage_key(), new_storage_key()
    a, b = _binding(a_data, a_key, "a" * 32), _binding(b_data, b_key, "b" * 32)
    a_ct, a_wrapped = envelope.seal_object(MASTER, a_data, a, owner_kind=None, owner_id=None)
    b_ct, b_wrapped = envelope.seal_object(MASTER, b_data, b, owner_kind=None, owner_id=None)
    # The objects swapped in the store: each row's (correct) key opens neither.
    await store.put(a_key, b_ct)
    await store.put(b_key, a_ct)
    with pytest.raises(envelope.IntegrityFailure):
        envelope.open_object(MASTER, await store.get(a_key), a_wrapped, a, owner_kind=None, owner_id=None)
    with pytest.raises(envelope.IntegrityFailure):
        envelope.open_object(MASTER, await store.get(b_key), b_wrapped, b, owner_kind=None, owner_id=None)
    # Objects and wrapped keys both swapped (a whole row's secrets moved to another row): still refused,
    # the associated data names the row.
    with pytest.raises(envelope.IntegrityFailure):
        envelope.open_object(MASTER, await store.get(a_key), b_wrapped, a, owner_kind=None, owner_id=None)
    # Only the wrapped keys swapped.
    await store.put(a_key, a_ct)
    with pytest.raises(envelope.IntegrityFailure):
        envelope.open_object(MASTER, await store.get(a_key), b_wrapped, a, owner_kind=None, owner_id=None)
    # The same ciphertext copied to another patient's row.
    other_patient = _binding(a_data, a_key, "a" * 32, patient_id=8)
    with pytest.raises(envelope.IntegrityFailure):
        envelope.open_object(
            MASTER, await store.get(a_key), a_wrapped, other_patient, owner_kind=None, owner_id=None
        )
    # Another master key.
    with pytest.raises(envelope.IntegrityFailure):
        envelope.open_object(os.urandom(32), a_ct, a_wrapped, a, owner_kind=None, owner_id=None)
    assert envelope.open_object(MASTER, a_ct, a_wrapped, a, owner_kind=None, owner_id=None) == a_data


def test_rewrap_binds_the_owner() -> None:
    data = b"%PDF-1.4 ..."
    binding = _binding(data, new_storage_key())
    ct, wrapped = envelope.seal_object(MASTER, data, binding, owner_kind=None, owner_id=None)
    attached = envelope.rewrap(MASTER, wrapped, binding, old_owner=(None, None), new_owner=("message", "12"))
    assert envelope.open_object(MASTER, ct, attached, binding, owner_kind="message", owner_id="12") == data
    for kind, ident in [("message", "13"), ("skin_case", "12"), (None, None)]:
        with pytest.raises(envelope.IntegrityFailure):
            envelope.open_object(MASTER, ct, attached, binding, owner_kind=kind, owner_id=ident)
    # Length-prefixed fields: ("message", "12") and ("message1", "2") are different contexts.
    assert binding.key_context("message", "12") != binding.key_context("message1", "2")


async def test_filesystem_writes_stay_under_the_root_and_leave_no_temporary_files(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    keys = [new_storage_key() for _ in range(20)]
    for key in keys:
        await store.put(key, key.encode())
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == sorted(keys)
    assert all(p.resolve().is_relative_to((tmp_path / "blobs").resolve()) for p in files)
    assert all(p.parent.parent.parent == tmp_path / "blobs" for p in files)
    assert oct((tmp_path / "blobs" / keys[0][:2]).stat().st_mode & 0o777) == "0o700"


def test_the_settings_choose_the_back_end(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    fs = open_blob_store(make_settings("sqlite+aiosqlite:///:memory:", tmp_path))
    assert isinstance(fs, FilesystemBlobStore)
    assert fs.root == tmp_path / "blobs"
    with pytest.raises(ValueError, match="TELECARE_S3_BUCKET"):
        make_settings("sqlite+aiosqlite:///:memory:", tmp_path, blob_backend="s3")
