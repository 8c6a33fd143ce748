"""Envelope encryption of stored files (docs/files.md#encryption).

Each object gets its own random 256-bit data key. The object is sealed with it (AES-256-GCM, core/crypto.py)
before it leaves the process; the data key is sealed ("wrapped") with the master key (TELECARE_DATA_KEY)
and kept in the database row, never in the store. Both seals carry associated data naming the row they
belong to (docs/files.md#associated-data):

- the object:      file id, organization, patient, storage key, content type, size and SHA-256 of the
                   plaintext; so one object's ciphertext put in another's place does not open;
- the wrapped key: the same, plus the owner record (kind and id), so a data key moved to another row, or a
                   file re-pointed at another owner behind the service's back, does not open.

The owner may be set after the upload (`rewrap`): only the 61-byte wrapped key is sealed again, not the
object."""

from __future__ import annotations

import os
from dataclasses import dataclass

from telecare.core.crypto import DecryptionError, seal, unseal

_OBJECT_CONTEXT = b"blob:v1:"
_KEY_CONTEXT = b"blob-key:v1:"
DATA_KEY_BYTES = 32


class IntegrityFailure(Exception):
    """The stored object or its wrapped key does not open for this row: altered, truncated, swapped with
    another file's, or sealed under another master key."""


@dataclass(frozen=True)
class Binding:
    """The facts of a row that its object and wrapped key are bound to."""

    file_id: str
    org_id: int
    patient_id: int
    storage_key: str
    content_type: str
    byte_size: int
    sha256: str

    def object_context(self) -> bytes:
        return _OBJECT_CONTEXT + _fields(
            self.file_id,
            str(self.org_id),
            str(self.patient_id),
            self.storage_key,
            self.content_type,
            str(self.byte_size),
            self.sha256,
        )

    def key_context(self, owner_kind: str | None, owner_id: str | None) -> bytes:
        return _KEY_CONTEXT + self.object_context() + _fields(owner_kind or "", owner_id or "")


def _fields(*values: str) -> bytes:
    """Length-prefixed fields ("3:abc,"): no value can be made to read as two, whatever it contains."""
    out = bytearray()
    for value in values:
        raw = value.encode()
        out += b"%d:%s," % (len(raw), raw)
    return bytes(out)


def seal_object(
    master_key: bytes, plaintext: bytes, binding: Binding, *, owner_kind: str | None, owner_id: str | None
) -> tuple[bytes, bytes]:
    """(ciphertext for the store, wrapped data key for the row)."""
    data_key = os.urandom(DATA_KEY_BYTES)
    ciphertext = seal(data_key, plaintext, binding.object_context())
    wrapped = seal(master_key, data_key, binding.key_context(owner_kind, owner_id))
    return ciphertext, wrapped


def _unwrap(master_key: bytes, wrapped: bytes, context: bytes) -> bytes:
    try:
        data_key = unseal(master_key, wrapped, context)
    except DecryptionError as exc:
        raise IntegrityFailure("the wrapped data key does not open for this row") from exc
    if len(data_key) != DATA_KEY_BYTES:
        raise IntegrityFailure("the wrapped data key has the wrong length")
    return data_key


def open_object(
    master_key: bytes,
    ciphertext: bytes,
    wrapped: bytes,
    binding: Binding,
    *,
    owner_kind: str | None,
    owner_id: str | None,
) -> bytes:
    data_key = _unwrap(master_key, wrapped, binding.key_context(owner_kind, owner_id))
    try:
        return unseal(data_key, ciphertext, binding.object_context())
    except DecryptionError as exc:
        raise IntegrityFailure("the stored object does not open for this row") from exc


def rewrap(
    master_key: bytes,
    wrapped: bytes,
    binding: Binding,
    *,
    old_owner: tuple[str | None, str | None],
    new_owner: tuple[str | None, str | None],
) -> bytes:
    """The data key sealed again for a new owner (attaching an uploaded file to its message)."""
    data_key = _unwrap(master_key, wrapped, binding.key_context(*old_owner))
    return seal(master_key, data_key, binding.key_context(*new_owner))
