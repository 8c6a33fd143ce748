"""`telecare files sweep` removes old blobs no row names, and nothing else (docs/files.md#orphans)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from telecare.core.blobs import FilesystemBlobStore, new_storage_key
from telecare.core.db import Database
from telecare.files import service
from tests import factories
from tests.subprocesses import cli_env, run_telecare
from tests.visit_factories import principal_of


@pytest.mark.parametrize("blob_backend", ["filesystem"], indirect=True)
async def test_the_sweep_command_removes_old_orphans_only(
    db: Database, blob_backend: str, tmp_path: Path
) -> None:
    org = await factories.make_org(db)
    patient = await factories.make_patient(db, org, with_login=True)
    assert isinstance(patient, factories.Account)
    assert patient.patient_id is not None
    async with db.unit_of_work() as uow:
        kept = await service.store_upload(
            uow,
            principal_of(patient),
            patient_id=patient.patient_id,
            data=b"%PDF-1.4\nstartxref\n0\n%%EOF\n",
            declared_name="a.pdf",
        )
    store = FilesystemBlobStore(Path(db.settings.data_dir) / "blobs")
    old, young = new_storage_key(), new_storage_key()
    await store.put(old, b"orphan")
    await store.put(young, b"upload in flight")
    two_hours_ago = time.time() - 7200
    for key in (old, kept.storage_key):
        os.utime(store.path_of(key), (two_hours_ago, two_hours_ago))
    env = cli_env(db.settings, TELECARE_DATA_DIR=str(db.settings.data_dir))
    result = run_telecare("files", "sweep", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "removed 1 orphan blob(s)" in result.stdout
    assert sorted([info.key async for info in store.keys()]) == sorted([kept.storage_key, young])
