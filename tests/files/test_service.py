"""The stored-file actions end to end: SQLite and PostgreSQL, each on the filesystem store and on a real
S3-compatible server (docs/files.md). Upload, authorisation and audit of downloads, tampering in the store
and in the database, attaching to an owner, orphan blobs after a rollback, and the schema against the
models."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from telecare.audit.models import AuditEntry
from telecare.auth.principal import Principal
from telecare.core.blobs import BlobStore, blob_store, new_storage_key
from telecare.core.db import Database
from telecare.core.errors import Forbidden
from telecare.files import service
from telecare.files.content import FileTooLarge, UnsupportedFileType
from telecare.files.models import FileKind, StoredFile
from telecare.identity.models import Role
from tests import factories
from tests.files import images
from tests.visit_factories import principal_of


@dataclass
class Chart:
    patient: Principal
    doctor: Principal  # on the patient's care team
    stranger: Principal  # a physician of the same organization, not on the care team
    coordinator: Principal
    outsider: Principal  # the patient of another organization
    patient_id: int


async def _chart(db: Database) -> Chart:
    org = await factories.make_org(db)
    other_org = await factories.make_org(db)
    patient = await factories.make_patient(db, org, with_login=True)
    outsider = await factories.make_patient(db, other_org, with_login=True)
    assert isinstance(patient, factories.Account)
    assert isinstance(outsider, factories.Account)
    doctor = await factories.make_user(db, org, Role.PHYSICIAN)
    stranger = await factories.make_user(db, org, Role.PHYSICIAN)
    coordinator = await factories.make_user(db, org, Role.COORDINATOR)
    assert doctor.practitioner_id is not None
    assert patient.patient_id is not None
    await factories.add_to_care_team(
        db, patient_id=patient.patient_id, practitioner_id=doctor.practitioner_id, org_id=org
    )
    return Chart(
        principal_of(patient),
        principal_of(doctor),
        principal_of(stranger),
        principal_of(coordinator),
        principal_of(outsider),
        patient.patient_id,
    )


async def _upload(
    db: Database, who: Principal, patient_id: int, data: bytes, name: str = "x.jpg"
) -> StoredFile:
    async with db.unit_of_work() as uow:
        return await service.store_upload(uow, who, patient_id=patient_id, data=data, declared_name=name)


async def _open(db: Database, who: Principal, file_id: str) -> service.OpenedFile:
    async with db.unit_of_work(read_only=True) as uow:
        return await service.open_file(uow, who, file_id=file_id)


async def _store(db: Database) -> BlobStore:
    async with db.unit_of_work(read_only=True) as uow:
        return blob_store(uow)


async def _keys(db: Database) -> list[str]:
    return [info.key async for info in (await _store(db)).keys()]


async def test_upload_and_open_round_trip_with_audit(db: Database, blob_backend: str) -> None:
    chart = await _chart(db)
    photo = images.jpeg(exif=images.gps_exif())
    row = await _upload(db, chart.patient, chart.patient_id, photo, "../../etc/passwd")
    assert row.kind is FileKind.IMAGE
    assert row.content_type == "image/jpeg"
    assert row.display_name == "passwd.jpg"
    assert len(row.id) == 32
    assert row.id != row.storage_key
    assert (row.width, row.height) == (320, 240)
    opened = await _open(db, chart.doctor, row.id)
    assert opened.data.startswith(b"\xff\xd8\xff")
    assert b"Exif" not in opened.data
    assert hashlib.sha256(opened.data).hexdigest() == row.sha256 == opened.file.sha256
    assert (await _open(db, chart.patient, row.id)).data == opened.data
    # Stored encrypted: nothing of the JPEG in the back end.
    raw = await (await _store(db)).get(row.storage_key)
    assert images.JFIF_HEADER not in raw
    assert opened.data[:64] not in raw
    async with factories.setup_uow(db) as uow:
        entries = (
            await uow.execute(
                select(AuditEntry.action, AuditEntry.actor_user_id).where(
                    AuditEntry.resource_type == "Binary", AuditEntry.resource_id == row.id
                )
            )
        ).all()
    assert sorted(entries) == sorted(
        [("create", chart.patient.user_id), ("read", chart.doctor.user_id), ("read", chart.patient.user_id)]
    )


async def test_only_the_chart_can_open_a_file(db: Database, blob_backend: str) -> None:
    chart = await _chart(db)
    row = await _upload(db, chart.patient, chart.patient_id, images.png())
    for who in (chart.stranger, chart.outsider):
        with pytest.raises(service.FileNotFound):
            await _open(db, who, row.id)
    with pytest.raises(service.FileNotFound):  # the same answer as for a file that does not exist
        await _open(db, chart.doctor, new_storage_key())
    with pytest.raises(Forbidden):  # no grant on files at all, whether or not the file exists
        await _open(db, chart.coordinator, row.id)
    with pytest.raises(Forbidden):
        await _open(db, chart.coordinator, new_storage_key())
    for who in (chart.stranger, chart.outsider):  # nor upload into another patient's chart
        with pytest.raises(Exception, match=r"(?i)not found"):
            await _upload(db, who, chart.patient_id, images.png())
    async with factories.setup_uow(db) as uow:
        denied = (
            await uow.execute(
                select(AuditEntry.actor_user_id).where(
                    AuditEntry.resource_type == "Binary", AuditEntry.outcome == "denied"
                )
            )
        ).scalars()
        assert set(denied) >= {chart.stranger.user_id, chart.outsider.user_id, chart.coordinator.user_id}
    assert len(await _keys(db)) == 1  # the refused uploads left no blob


async def test_tampered_stored_bytes_are_a_500_problem_not_the_bytes(
    db: Database, blob_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    chart = await _chart(db)
    row = await _upload(db, chart.patient, chart.patient_id, images.jpeg(), "Rash of Zebulon.jpg")
    store = await _store(db)
    good = await store.get(row.storage_key)
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 0x80
    await store.put(row.storage_key, bytes(tampered))
    with pytest.raises(service.StoredFileDamaged) as exc:
        await _open(db, chart.doctor, row.id)
    assert exc.value.status_code == 500
    assert exc.value.code == "file_integrity_failed"
    assert f"stored file {row.id} failed its integrity check" in caplog.text  # logged by id...
    assert "Zebulon" not in caplog.text  # ...never by name
    await store.delete(row.storage_key)
    with pytest.raises(service.StoredFileDamaged):  # missing from the store
        await _open(db, chart.doctor, row.id)


async def test_swapped_objects_or_wrapped_keys_are_refused(db: Database, blob_backend: str) -> None:
    chart = await _chart(db)
    a = await _upload(db, chart.patient, chart.patient_id, images.jpeg(images.picture((64, 64))))
    b = await _upload(db, chart.patient, chart.patient_id, images.jpeg(images.picture((96, 64))))
    store = await _store(db)
    a_ct, b_ct = await store.get(a.storage_key), await store.get(b.storage_key)
    await store.put(a.storage_key, b_ct)
    await store.put(b.storage_key, a_ct)
    for row in (a, b):
        with pytest.raises(service.StoredFileDamaged):
            await _open(db, chart.doctor, row.id)
    await store.put(a.storage_key, a_ct)
    await store.put(b.storage_key, b_ct)
    assert (await _open(db, chart.doctor, a.id)).data
    async with factories.setup_uow(db, "tamper with the rows") as uow:  # swap the wrapped keys in the DB
        await uow.execute(update(StoredFile).where(StoredFile.id == a.id).values(wrapped_key=b.wrapped_key))
        await uow.execute(update(StoredFile).where(StoredFile.id == b.id).values(wrapped_key=a.wrapped_key))
    for row in (a, b):
        with pytest.raises(service.StoredFileDamaged):
            await _open(db, chart.doctor, row.id)
    async with factories.setup_uow(db, "point both rows at one object") as uow:
        await uow.execute(
            update(StoredFile)
            .where(StoredFile.id == b.id)
            .values(wrapped_key=b.wrapped_key, storage_key=new_storage_key())
        )
        await uow.execute(
            update(StoredFile).where(StoredFile.id == a.id).values(wrapped_key=a.wrapped_key, sha256=b.sha256)
        )
    with pytest.raises(service.StoredFileDamaged):  # a row's digest edited
        await _open(db, chart.doctor, a.id)


async def test_attach_to_an_owner_binds_it(db: Database, blob_backend: str) -> None:
    chart = await _chart(db)
    row = await _upload(db, chart.patient, chart.patient_id, images.minimal_pdf(), "referral.jpg")
    assert row.content_type == "application/pdf"
    assert row.display_name == "referral.pdf"
    with pytest.raises(service.FileNotYours):
        async with db.unit_of_work() as uow:
            await service.attach_file(uow, chart.doctor, file_id=row.id, owner_kind="message", owner_id=5)
    async with db.unit_of_work() as uow:
        attached = await service.attach_file(
            uow, chart.patient, file_id=row.id, owner_kind="message", owner_id=5
        )
        assert (attached.owner_kind, attached.owner_id) == ("message", "5")
    async with db.unit_of_work() as uow:  # the same owner again: nothing to do
        await service.attach_file(uow, chart.patient, file_id=row.id, owner_kind="message", owner_id="5")
    with pytest.raises(service.FileAlreadyAttached):
        async with db.unit_of_work() as uow:
            await service.attach_file(uow, chart.patient, file_id=row.id, owner_kind="message", owner_id=6)
    assert (await _open(db, chart.doctor, row.id)).data == images.minimal_pdf()
    async with factories.setup_uow(db, "re-point the file behind the service") as uow:
        await uow.execute(update(StoredFile).where(StoredFile.id == row.id).values(owner_id="6"))
    with pytest.raises(service.StoredFileDamaged):
        await _open(db, chart.doctor, row.id)


async def test_upload_with_owner_in_the_same_transaction(db: Database, blob_backend: str) -> None:
    chart = await _chart(db)
    async with db.unit_of_work() as uow:
        row = await service.store_upload(
            uow,
            chart.doctor,
            patient_id=chart.patient_id,
            data=images.png(),
            declared_name="wound.png",
            owner_kind="skin_case",
            owner_id="abc-1",
            accept=service.IMAGES_ONLY,
        )
    assert (row.owner_kind, row.owner_id, row.created_by_user_id) == (
        "skin_case",
        "abc-1",
        chart.doctor.user_id,
    )
    assert (await _open(db, chart.patient, row.id)).file.content_type == "image/png"


async def test_refused_content_and_size_store_nothing(db: Database, blob_backend: str) -> None:
    chart = await _chart(db)
    html = b"<html><body onload=alert(1)>hello</body></html>"
    with pytest.raises(UnsupportedFileType) as exc:
        await _upload(db, chart.patient, chart.patient_id, html, "image.png")
    assert exc.value.status_code == 415
    assert exc.value.errors[0].field == "file"
    with pytest.raises(UnsupportedFileType):
        async with db.unit_of_work() as uow:
            await service.store_upload(
                uow,
                chart.patient,
                patient_id=chart.patient_id,
                data=images.minimal_pdf(),
                declared_name="photo.jpg",
                field="photo",
                accept=service.IMAGES_ONLY,
            )
    too_big = images.jpeg() + b"\x00" * db.settings.max_upload_bytes
    with pytest.raises(FileTooLarge) as big:
        await _upload(db, chart.patient, chart.patient_id, too_big)
    assert big.value.status_code == 413
    assert await _keys(db) == []
    async with factories.setup_uow(db) as uow:
        assert (await uow.execute(select(StoredFile.id))).first() is None


async def test_a_rolled_back_upload_leaves_no_blob(db: Database, blob_backend: str) -> None:
    chart = await _chart(db)
    written: list[bytes] = []

    async def owner_action_that_fails() -> None:
        async with db.unit_of_work() as uow:
            row = await service.store_upload(
                uow, chart.patient, patient_id=chart.patient_id, data=images.jpeg(), declared_name="a.jpg"
            )
            written.append(await blob_store(uow).get(row.storage_key))  # written before the commit
            raise RuntimeError("owner action failed")

    with pytest.raises(RuntimeError, match="owner action failed"):
        await owner_action_that_fails()
    assert written[0]
    assert await _keys(db) == []
    kept = await _upload(db, chart.patient, chart.patient_id, images.jpeg())
    assert await _keys(db) == [kept.storage_key]


async def test_the_sweep_removes_only_unreferenced_blobs(db: Database, blob_backend: str) -> None:
    chart = await _chart(db)
    kept = await _upload(db, chart.patient, chart.patient_id, images.png())
    store = await _store(db)
    orphan = new_storage_key()
    await store.put(orphan, b"left by a process killed before its commit")
    async with db.unit_of_work(read_only=True) as uow:
        assert await service.sweep_orphan_blobs(uow, older_than=timedelta(hours=1)) == []  # too young
    async with db.unit_of_work(read_only=True) as uow:
        removed = await service.sweep_orphan_blobs(uow, older_than=timedelta(seconds=-60))
    assert removed == [orphan]
    assert await _keys(db) == [kept.storage_key]


@pytest.mark.parametrize("blob_backend", ["filesystem"], indirect=True)
async def test_the_migration_matches_the_model(db: Database, blob_backend: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from telecare.core.db import Base

    def diff(connection: object) -> list[object]:
        context = MigrationContext.configure(connection)  # type: ignore[arg-type]
        changes = compare_metadata(context, Base.metadata)
        return [c for c in changes if "stored_files" in repr(c)]

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
