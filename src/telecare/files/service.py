"""Stored files: upload, attach to the record they belong to, open (docs/files.md).

Actions are called by the domains that own files (a message's attachments, a skin case's photos) inside
their own actions, in the same unit of work: `store_upload` checks the content, encrypts it, writes the
blob and adds the row; `attach_file` points an uploaded file at its owner; `open_file` authorises, audits,
fetches and decrypts. Every one authorises on the file's patient through the access policy
(`Resource.BINARY`) and is audited there.

The blob is written before the transaction commits. Should it roll back (a later step of the owning action
fails, the commit fails), the blob is deleted again; a process killed in between leaves an orphan that
`sweep_orphan_blobs` removes (docs/files.md#orphans)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access.policy import Action, Resource
from telecare.access.service import PatientNotAccessible, open_patient, reach_for, record_denial
from telecare.auth.principal import Principal
from telecare.core.blobs import BlobMissing, BlobStore, blob_store, new_storage_key
from telecare.core.db import as_uow
from telecare.core.errors import AppError, Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.files import envelope, repository
from telecare.files.content import CheckedContent, check_upload, display_name
from telecare.files.models import FileKind, StoredFile

log = logging.getLogger(__name__)

ANY_FILE = frozenset({FileKind.IMAGE, FileKind.PDF})
IMAGES_ONLY = frozenset({FileKind.IMAGE})
_OWNER_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
_OWNER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FILE_ID = re.compile(r"[0-9a-f]{32}")


class FileNotFound(NotFound):
    """No such file, or one the caller may not open (the same answer: no existence oracle)."""

    code = "file_not_found"
    title = "File not found"


class FileNotYours(Forbidden):
    """Only the person who uploaded a file attaches it to a record."""

    code = "file_not_yours"
    title = "Not your upload"


class FileAlreadyAttached(Conflict):
    """The file already belongs to another record; a file is never moved between records."""

    code = "file_already_attached"
    title = "File already attached"


class StoredFileDamaged(AppError):
    """The stored object is missing or failed its integrity check (altered, truncated or swapped in the
    store or in the database): a server-side failure, logged with the file id (docs/files.md#failure-modes).
    The bytes are never served."""

    status_code = 500
    code = "file_integrity_failed"
    title = "Stored file damaged"


@dataclass(frozen=True)
class OpenedFile:
    file: StoredFile
    data: bytes


def _binding(row: StoredFile) -> envelope.Binding:
    return envelope.Binding(
        file_id=row.id,
        org_id=row.org_id,
        patient_id=row.patient_id,
        storage_key=row.storage_key,
        content_type=row.content_type,
        byte_size=row.byte_size,
        sha256=row.sha256,
    )


def _owner(
    owner_kind: str | None, owner_id: str | int | None, field: str = "owner"
) -> tuple[str, str] | None:
    if owner_kind is None and owner_id is None:
        return None
    kind, ident = owner_kind or "", "" if owner_id is None else str(owner_id)
    errors = []
    if _OWNER_KIND.fullmatch(kind) is None:
        errors.append(FieldError(f"{field}_kind", "a lower-case record kind such as 'message'"))
    if _OWNER_ID.fullmatch(ident) is None:
        errors.append(FieldError(f"{field}_id", "the owning record's id"))
    if errors:
        raise ValidationFailed("The owning record is not valid.", errors=errors)
    return kind, ident


async def store_upload(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    data: bytes,
    declared_name: str | None,
    field: str = "file",
    accept: frozenset[FileKind] = ANY_FILE,
    owner_kind: str | None = None,
    owner_id: str | int | None = None,
) -> StoredFile:
    """Check, encrypt and store one uploaded file of `patient_id`; `field` names it in any refusal.

    Refusals: 404 for a patient out of reach, 403 for a role without the grant, 413 over
    TELECARE_MAX_UPLOAD_BYTES, 415 for content of another type, 422 for an unreadable or oversized image."""
    uow = as_uow(session)
    settings = uow.settings
    owner = _owner(owner_kind, owner_id)
    file_id = secrets.token_hex(16)
    await open_patient(
        session, principal, patient_id, resource=Resource.BINARY, action=Action.CREATE, resource_id=file_id
    )
    checked: CheckedContent = await asyncio.to_thread(
        check_upload,
        data,
        field=field,
        accept=accept,
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.image_max_pixels,
        max_edge=settings.image_max_edge,
    )
    row = StoredFile(
        id=file_id,
        org_id=principal.org_id,
        patient_id=patient_id,
        owner_kind=owner[0] if owner else None,
        owner_id=owner[1] if owner else None,
        storage_key=new_storage_key(),
        kind=checked.kind,
        content_type=checked.content_type,
        byte_size=len(checked.data),
        sha256=hashlib.sha256(checked.data).hexdigest(),
        display_name=display_name(declared_name, checked.extension),
        width=checked.width,
        height=checked.height,
        created_at=utc_now(),
        created_by_user_id=principal.user_id or None,
    )
    ciphertext, row.wrapped_key = envelope.seal_object(
        settings.data_key_bytes, checked.data, _binding(row), owner_kind=row.owner_kind, owner_id=row.owner_id
    )
    store = blob_store(uow)
    key = row.storage_key

    async def discard() -> None:
        await store.delete(key)

    uow.on_rollback(discard)  # before the write: a half-done PUT is cleaned up too
    await store.put(key, ciphertext)
    session.add(row)
    await session.flush()
    return row


async def attach_file(
    session: AsyncSession,
    principal: Principal,
    *,
    file_id: str,
    owner_kind: str,
    owner_id: str | int,
) -> StoredFile:
    """Point the caller's own upload at the record it belongs to (idempotent for the same record)."""
    owner = _owner(owner_kind, owner_id)
    assert owner is not None
    row = await _authorised(session, principal, file_id, Action.UPDATE, for_update=True)
    if (row.owner_kind, row.owner_id) == owner:
        return row
    if row.owner_kind is not None:
        raise FileAlreadyAttached()
    if row.created_by_user_id is None or row.created_by_user_id != principal.user_id:
        raise FileNotYours()
    master = as_uow(session).settings.data_key_bytes
    try:
        row.wrapped_key = envelope.rewrap(
            master, row.wrapped_key, _binding(row), old_owner=(None, None), new_owner=owner
        )
    except envelope.IntegrityFailure:
        log.error("stored file %s: wrapped key failed its integrity check on attach", row.id)
        raise StoredFileDamaged() from None
    row.owner_kind, row.owner_id = owner
    await session.flush()
    return row


async def open_file(session: AsyncSession, principal: Principal, *, file_id: str) -> OpenedFile:
    """The file's row and its decrypted bytes, for a caller who may open the patient's files (audited)."""
    row = await _authorised(session, principal, file_id, Action.READ)
    store = blob_store(as_uow(session))
    try:
        ciphertext = await store.get(row.storage_key)
    except BlobMissing:
        log.error("stored file %s: its blob is missing from the store", row.id)
        raise StoredFileDamaged() from None
    master = as_uow(session).settings.data_key_bytes
    try:
        data = envelope.open_object(
            master,
            ciphertext,
            row.wrapped_key,
            _binding(row),
            owner_kind=row.owner_kind,
            owner_id=row.owner_id,
        )
    except envelope.IntegrityFailure as exc:
        log.error("stored file %s failed its integrity check: %s", row.id, exc)
        raise StoredFileDamaged() from None
    if len(data) != row.byte_size or hashlib.sha256(data).hexdigest() != row.sha256:
        log.error("stored file %s: decrypted content does not match its digest", row.id)
        raise StoredFileDamaged()
    return OpenedFile(row, data)


async def _authorised(
    session: AsyncSession, principal: Principal, file_id: str, action: Action, *, for_update: bool = False
) -> StoredFile:
    try:  # a role without the grant is refused before the lookup: the same 403 whether the file exists
        reach_for(principal, Resource.BINARY, action)
    except AppError:
        record_denial(
            session, principal, resource=Resource.BINARY, action=action, patient_id=None, resource_id=None
        )
        raise
    row = None
    if isinstance(file_id, str) and _FILE_ID.fullmatch(file_id):
        row = await repository.file_in_org(
            session, org_id=principal.org_id, file_id=file_id, for_update=for_update
        )
    if row is None:
        known_shape = file_id if isinstance(file_id, str) and _FILE_ID.fullmatch(file_id) else None
        record_denial(
            session,
            principal,
            resource=Resource.BINARY,
            action=action,
            patient_id=None,
            resource_id=known_shape,
        )
        raise FileNotFound()
    try:
        await open_patient(
            session, principal, row.patient_id, resource=Resource.BINARY, action=action, resource_id=row.id
        )
    except PatientNotAccessible:
        raise FileNotFound() from None  # the denial is audited by open_patient
    return row


# ---- orphan blobs ----------------------------------------------------------------------------------------


async def sweep_orphan_blobs(
    session: AsyncSession, *, older_than: timedelta = timedelta(hours=1), store: BlobStore | None = None
) -> list[str]:
    """Delete blobs that no row names and that are older than `older_than` (a process killed between the
    blob write and the commit); return their keys. The age keeps uploads still in flight safe
    (docs/files.md#orphans). Writes nothing to the database."""
    store = store or blob_store(as_uow(session))
    cutoff = utc_now() - older_than
    candidates = [info.key async for info in store.keys() if info.modified_at < cutoff]
    removed: list[str] = []
    for start in range(0, len(candidates), 500):
        batch = candidates[start : start + 500]
        referenced = await repository.referenced_keys(session, batch)
        for key in batch:
            if key not in referenced:
                with contextlib.suppress(BlobMissing):
                    await store.delete(key)
                removed.append(key)
    if removed:
        log.info("removed %d orphan blobs", len(removed))
    return removed
