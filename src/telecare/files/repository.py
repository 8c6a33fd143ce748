"""Queries of stored files. A single file is looked up within the caller's organization and then opened
through `access.service.open_patient` (authorised and audited there); lists start from `readable`."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access.policy import Action, Resource
from telecare.access.service import patient_scope
from telecare.auth.principal import Principal
from telecare.files.models import StoredFile


def readable(principal: Principal) -> Select[StoredFile]:
    """The files of the patients `principal` may open."""
    scope = patient_scope(principal, Resource.BINARY, Action.READ)
    return select(StoredFile).where(
        StoredFile.org_id == principal.org_id, StoredFile.patient_id.in_(scope.scalar_subquery())
    )


async def file_in_org(
    session: AsyncSession, *, org_id: int, file_id: str, for_update: bool = False
) -> StoredFile | None:
    stmt = select(StoredFile).where(StoredFile.id == file_id, StoredFile.org_id == org_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def referenced_keys(session: AsyncSession, keys: Collection[str]) -> set[str]:
    """Which of `keys` a stored-file row names."""
    if not keys:
        return set()
    rows = await session.execute(select(StoredFile.storage_key).where(StoredFile.storage_key.in_(list(keys))))
    return set(rows.scalars().all())
