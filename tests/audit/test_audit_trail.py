"""The audit trail records every PHI access with who, role, patient, resource, action, outcome, time, client
address and purpose, in the same transaction as the access; the table is append-only on both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from telecare.audit import service as audit
from telecare.audit.models import AuditEntry
from telecare.auth.principal import Principal
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.identity import service
from telecare.identity.models import Patient, Role
from telecare.identity.schemas import PatientCreate
from tests.factories import Account, add_to_care_team, bearer, make_org, make_patient, make_user, token_for

CLIENT = "127.0.0.1"  # the conftest client's address


async def _last_id(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(text("SELECT COALESCE(MAX(id), 0) FROM audit_entries"))).scalar_one())


async def _entries_after(db: Database, last_id: int) -> list[AuditEntry]:
    async with db.unit_of_work() as s:
        return list(
            (
                await s.execute(select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id))
            ).scalars()
        )


def _shape(e: AuditEntry) -> dict[str, Any]:
    return {
        "actor_user_id": e.actor_user_id,
        "actor_role": e.actor_role,
        "actor_kind": e.actor_kind,
        "patient_id": e.patient_id,
        "resource_type": e.resource_type,
        "resource_id": e.resource_id,
        "action": e.action,
        "outcome": e.outcome,
        "client_addr": e.client_addr,
        "purpose": e.purpose,
    }


async def _setup(db: Database) -> tuple[int, Account, Account, int, int]:
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    coord = await make_user(db, org, Role.COORDINATOR)
    mine = await make_patient(db, org)
    other = await make_patient(db, org)
    assert isinstance(mine, int)
    assert isinstance(other, int)
    assert doc.practitioner_id
    await add_to_care_team(db, patient_id=mine, practitioner_id=doc.practitioner_id, org_id=org)
    return org, doc, coord, mine, other


async def test_every_phi_access_is_audited_with_who_what_when_where_and_why(
    client: httpx.AsyncClient, db: Database
) -> None:
    org, doc, coord, mine, other = await _setup(db)
    doc_token = await token_for(db, doc)
    coord_token = await token_for(db, coord)
    doc_actor = {"actor_user_id": doc.user_id, "actor_role": "physician", "actor_kind": "token"}
    doc_actor |= {"client_addr": CLIENT, "purpose": "TREAT"}

    async def audited(
        method: str, url: str, token: str, **kw: Any
    ) -> tuple[httpx.Response, list[AuditEntry]]:
        before = await _last_id(db)
        started = utc_now()
        r = await client.request(method, url, headers=bearer(token), **kw)
        entries = await _entries_after(db, before)
        for e in entries:
            assert e.org_id == org
            assert started - timedelta(seconds=1) <= e.at <= utc_now()
        return r, entries

    r, entries = await audited("GET", f"/api/v1/patients/{mine}", doc_token)
    assert r.status_code == 200
    assert [_shape(e) for e in entries] == [
        doc_actor
        | {"patient_id": mine, "resource_type": "Patient", "resource_id": str(mine), "action": "read"}
        | {"outcome": "success"}
    ]

    r, entries = await audited("GET", "/api/v1/patients", doc_token, params={"name": "Given"})
    assert [p["id"] for p in r.json()["items"]] == [mine]
    query, *per_patient = entries
    assert _shape(query) == doc_actor | {
        "patient_id": None,
        "resource_type": "Patient",
        "resource_id": None,
        "action": "search",
        "outcome": "success",
    }
    assert query.detail == {"query": {"name": True, "mrn": False, "state": False}, "count": 1}
    assert [(e.patient_id, e.action, e.outcome) for e in per_patient] == [(mine, "search", "success")]

    r, entries = await audited("PATCH", f"/api/v1/patients/{mine}", doc_token, json={"city": "Erie"})
    assert r.json()["city"] == "Erie"
    assert [_shape(e) for e in entries] == [
        doc_actor
        | {"patient_id": mine, "resource_type": "Patient", "resource_id": str(mine), "action": "update"}
        | {"outcome": "success"}
    ]

    r, entries = await audited("GET", f"/api/v1/patients/{mine}/$export", doc_token)
    assert r.json()["patient"]["id"] == mine
    assert [(e.patient_id, e.resource_type, e.action, e.outcome) for e in entries] == [
        (mine, "Patient", "export", "success")
    ]

    body = {"mrn": "AUD-1", "given_name": "Ana", "family_name": "Lee", "birth_date": "1970-02-03"}
    r, entries = await audited(
        "POST", "/api/v1/patients", coord_token, json=body | {"sex": "female", "state": "PA"}
    )
    assert r.status_code == 201
    new_id = r.json()["id"]
    assert [_shape(e) for e in entries] == [
        {
            "actor_user_id": coord.user_id,
            "actor_role": "coordinator",
            "actor_kind": "token",
            "client_addr": CLIENT,
        }
        | {"purpose": "TREAT", "patient_id": new_id, "resource_type": "Patient", "resource_id": str(new_id)}
        | {"action": "create", "outcome": "success"}
    ]

    # A refused read is audited as denied (with the patient it aimed at), even though the request failed.
    r, entries = await audited("GET", f"/api/v1/patients/{other}", doc_token)
    assert r.status_code == 404
    assert [_shape(e) for e in entries] == [
        doc_actor
        | {"patient_id": other, "resource_type": "Patient", "resource_id": None, "action": "read"}
        | {"outcome": "denied"}
    ]
    # A role without the grant is denied and audited too.
    r, entries = await audited("GET", f"/api/v1/patients/{mine}/$export", coord_token)
    assert r.status_code == 403
    assert [(e.actor_user_id, e.patient_id, e.action, e.outcome) for e in entries] == [
        (coord.user_id, mine, "export", "denied")
    ]
    assert (await _verify(db)).ok


async def test_web_session_reads_are_audited_with_the_session_actor(
    client: httpx.AsyncClient, db: Database
) -> None:
    from tests.factories import web_login

    org = await make_org(db)
    account = await make_patient(db, org, with_login=True)
    assert isinstance(account, Account)
    await web_login(client, account)
    before = await _last_id(db)
    r = await client.get(f"/api/v1/patients/{account.patient_id}")
    assert r.status_code == 200
    entries = await _entries_after(db, before)
    assert [_shape(e) for e in entries] == [
        {
            "actor_user_id": account.user_id,
            "actor_role": "patient",
            "actor_kind": "session",
            "client_addr": CLIENT,
        }
        | {"purpose": "TREAT", "patient_id": account.patient_id, "resource_type": "Patient"}
        | {"resource_id": str(account.patient_id), "action": "read", "outcome": "success"}
    ]


async def test_a_rolled_back_write_leaves_no_audit_entry(client: httpx.AsyncClient, db: Database) -> None:
    org, doc, coord, mine, _ = await _setup(db)
    before = await _last_id(db)

    # Service level: the create wrote its audit row, then the unit of work failed.
    principal = Principal(user_id=coord.user_id, org_id=org, role=Role.COORDINATOR, kind="token")
    data = PatientCreate.model_validate(
        {
            "mrn": "RB-ROLLBACK",
            "given_name": "X",
            "family_name": "Y",
            "birth_date": "1980-01-01",
            "sex": "male",
        }
        | {"state": "NJ"}
    )

    class Boom(Exception):
        pass

    seen: list[str] = []

    async def create_then_fail() -> None:
        async with db.unit_of_work() as s:
            created = await service.create_patient(s, principal, data=data)
            assert created.id
            seen.extend(e.action for e in await _pending(s, before))
            raise Boom

    with pytest.raises(Boom):
        await create_then_fail()
    assert seen == ["create"]  # the entry existed inside the transaction
    assert await _entries_after(db, before) == []
    async with db.unit_of_work() as s:
        assert (await s.execute(select(Patient).where(Patient.mrn == "RB-ROLLBACK"))).first() is None

    # API level: the update is audited inside the transaction, then validation fails and rolls it back.
    token = await token_for(db, doc)
    before = await _last_id(db)
    r = await client.patch(f"/api/v1/patients/{mine}", json={"given_name": None}, headers=bearer(token))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "given_name"
    assert await _entries_after(db, before) == []
    r = await client.get(f"/api/v1/patients/{mine}", headers=bearer(token))
    assert r.json()["given_name"].startswith("Given")
    assert (await _verify(db)).ok


async def _pending(session: Any, after: int) -> list[AuditEntry]:
    return list((await session.execute(select(AuditEntry).where(AuditEntry.id > after))).scalars())


async def _verify(db: Database) -> audit.VerifyResult:
    async with db.unit_of_work() as s:
        return await audit.verify_chain(s, key=db.settings.secret("audit_hmac_key").encode())


APPEND_ONLY_PROBES = [
    "UPDATE audit_entries SET outcome = 'success' WHERE id = 1",
    "UPDATE audit_entries SET detail = NULL",
    "DELETE FROM audit_entries WHERE id = 1",
    "DELETE FROM audit_entries",
]


async def test_audit_table_rejects_update_delete_and_truncate(db: Database, backend: str) -> None:
    org = await make_org(db)
    await make_user(db, org, Role.NURSE)  # writes an audit entry
    before = await _entries_after(db, 0)
    assert before
    probes = APPEND_ONLY_PROBES + (["TRUNCATE audit_entries"] if backend == "postgresql" else [])
    for statement in probes:
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.engine.begin() as conn:
                await conn.execute(text(statement))
    after = await _entries_after(db, 0)
    assert [(e.id, e.mac, e.outcome, e.detail) for e in after] == [
        (e.id, e.mac, e.outcome, e.detail) for e in before
    ]
