"""Education assignments through the REST API and the pages, on both databases: a clinician caring for the
patient gives an article with a note; giving it again adds nothing; the patient sees it in Reading and
opening it records the reading (first, last, count), which the chart shows; a clinician opening it records
nothing; people outside the relationship, and patients giving articles, are refused; every access is
audited; the assignment leaves in the patient's export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from telecare.audit.models import AuditEntry
from telecare.core.db import Database
from telecare.education.models import EducationAssignment
from telecare.identity.models import Role
from tests.factories import (
    Account,
    add_to_care_team,
    bearer,
    make_org,
    make_patient,
    make_user,
    setup_uow,
    token_for,
    web_login,
)

SLUG = "high-blood-pressure-at-home"


@dataclass
class World:
    patient: Account
    nurse: Account
    outsider: Account
    coordinator: Account
    h: dict[str, dict[str, str]]

    @property
    def pid(self) -> int:
        assert self.patient.patient_id is not None
        return self.patient.patient_id


@pytest.fixture
async def world(db: Database) -> World:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    outsider = await make_user(db, org, Role.PHYSICIAN)
    coordinator = await make_user(db, org, Role.COORDINATOR)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    assert patient.patient_id is not None
    assert nurse.practitioner_id is not None
    await add_to_care_team(
        db, patient_id=patient.patient_id, practitioner_id=nurse.practitioner_id, org_id=org
    )
    accounts = {"patient": patient, "nurse": nurse, "outsider": outsider, "coordinator": coordinator}
    h = {k: bearer(await token_for(db, a)) for k, a in accounts.items()}
    return World(patient, nurse, outsider, coordinator, h)


async def give(client: httpx.AsyncClient, world: World, who: str = "nurse", **body: str) -> httpx.Response:
    return await client.post(
        f"/api/v1/patients/{world.pid}/education",
        json={"article": SLUG, **body},
        headers=world.h[who],
    )


async def audit_actions(db: Database, assignment_id: int) -> list[tuple[str, str]]:
    async with setup_uow(db) as s:
        rows = await s.execute(
            select(AuditEntry.action, AuditEntry.outcome)
            .where(
                AuditEntry.resource_type == "EducationAssignment",
                AuditEntry.resource_id == str(assignment_id),
            )
            .order_by(AuditEntry.id)
        )
        return [(a, o) for a, o in rows]


async def test_give_read_and_the_record_of_reading(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    r = await give(client, world, note="Measure twice a day this week.")
    assert r.status_code == 201, r.text
    given = r.json()
    assert given["article"] == SLUG
    assert given["title"] == "Checking your blood pressure at home"
    assert given["read_count"] == 0
    assert given["first_read_at"] is None
    aid = given["id"]
    # Giving it again (a retried request, or a second clinician) keeps one assignment.
    again = await give(client, world)
    assert again.status_code == 200
    assert again.json()["id"] == aid
    assert again.json()["note"] == "Measure twice a day this week."
    async with setup_uow(db) as s:
        count = len((await s.execute(select(EducationAssignment))).scalars().all())
    assert count == 1
    # The patient's list holds it; the patient reads it; the reading is recorded.
    mine = (await client.get("/api/v1/education/assignments", headers=world.h["patient"])).json()
    assert [m["id"] for m in mine] == [aid]
    opened = await client.post(f"/api/v1/education/assignments/{aid}/read", headers=world.h["patient"])
    assert opened.status_code == 200
    assert opened.json()["read_count"] == 1
    assert opened.json()["first_read_at"] is not None
    assert opened.json()["article_detail"]["title"] == given["title"]
    assert opened.json()["article_detail"]["body_markdown"].strip()
    await client.post(f"/api/v1/education/assignments/{aid}/read", headers=world.h["patient"])
    # The nurse sees two reads; the nurse opening it adds none, and cannot write the patient's record.
    seen = (await client.get(f"/api/v1/education/assignments/{aid}", headers=world.h["nurse"])).json()
    assert seen["read_count"] == 2
    assert seen["last_read_at"] >= seen["first_read_at"]
    denied = await client.post(f"/api/v1/education/assignments/{aid}/read", headers=world.h["nurse"])
    assert denied.status_code == 403
    seen = (await client.get(f"/api/v1/education/assignments/{aid}", headers=world.h["nurse"])).json()
    assert seen["read_count"] == 2
    actions = await audit_actions(db, aid)
    assert actions.count(("create", "success")) == 2
    assert actions.count(("update", "success")) == 2
    assert actions.count(("read", "success")) == 2
    assert ("update", "denied") in actions


async def test_refusals(db: Database, client: httpx.AsyncClient, world: World) -> None:
    aid = (await give(client, world)).json()["id"]
    # Outside the care relationship: as if it did not exist.
    assert (await give(client, world, "outsider")).status_code == 404
    assert (
        await client.get(f"/api/v1/education/assignments/{aid}", headers=world.h["outsider"])
    ).status_code == 404
    listing = await client.get(
        "/api/v1/education/assignments", params={"patient_id": world.pid}, headers=world.h["outsider"]
    )
    assert listing.status_code == 200
    assert listing.json() == []
    # Coordinators hold no grant; patients do not give articles.
    assert (await give(client, world, "coordinator")).status_code == 403
    assert (await give(client, world, "patient")).status_code == 403
    # An unknown article and an overlong note are refused naming the field, and nothing is written.
    r = await give(client, world, article="no-such-article")
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["article"]
    r = await give(client, world, article="fever-in-adults", note="x" * 1001)
    assert r.status_code == 422
    assert "note" in r.text
    async with setup_uow(db) as s:
        slugs = (await s.execute(select(EducationAssignment.article_slug))).scalars().all()
    assert slugs == [SLUG]
    assert (await client.get(f"/api/v1/education/assignments/{aid}")).status_code == 401
    assert ("read", "denied") in await audit_actions(db, aid)


async def test_pages_chart_and_export(
    db: Database, app: Any, client: httpx.AsyncClient, world: World
) -> None:
    csrf = await web_login(client, world.nurse)
    chart = await client.get(f"/patients/{world.pid}")
    assert 'id="section-education"' in chart.text
    assert "No articles given yet." in chart.text
    r = await client.post(
        "/education/assign",
        data={
            "csrf_token": csrf,
            "patient_id": str(world.pid),
            "article": "low-blood-sugar",
            "note": "Keep this handy.",
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/patients/{world.pid}#section-education"
    chart = await client.get(f"/patients/{world.pid}")
    assert "Keep this handy." in chart.text
    assert "Not read yet" in chart.text
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as portal:
        pcsrf = await web_login(portal, world.patient)
        reading = await portal.get("/education")
        assert reading.status_code == 200
        assert 'id="assigned-articles"' in reading.text
        assert "Keep this handy." in reading.text
        assert '<strong class="badge">New</strong>' in reading.text
        async with setup_uow(db) as s:
            aid = (await s.execute(select(EducationAssignment.id))).scalar_one()
        assert f'action="/education/assignments/{aid}/open"' in reading.text
        opened = await portal.post(f"/education/assignments/{aid}/open", data={"csrf_token": pcsrf})
        assert opened.status_code == 303
        page = await portal.get(opened.headers["location"])
        assert page.status_code == 200
        assert '<h1 id="article-h">' in page.text
        assert "Note from your care team: Keep this handy." in page.text
        assert "Sources:" in page.text
        reading = await portal.get("/education")
        assert '<strong class="badge">New</strong>' not in reading.text
        # Without the CSRF token the reading is not recorded.
        assert (await portal.post(f"/education/assignments/{aid}/open", data={})).status_code == 403
    chart = await client.get(f"/patients/{world.pid}")
    assert "Read 1 time, last" in chart.text
    export = await client.get(f"/api/v1/patients/{world.pid}/$export", headers=world.h["nurse"])
    assert export.status_code == 200, export.text
    assert [a["article"] for a in export.json()["education"]["assignments"]] == ["low-blood-sugar"]


async def test_the_library_is_for_anyone_signed_in(client: httpx.AsyncClient, world: World) -> None:
    listing = await client.get("/api/v1/education/articles", headers=world.h["coordinator"])
    assert listing.status_code == 200
    assert len(listing.json()) >= 10
    narrowed = await client.get(
        "/api/v1/education/articles", params={"disposition": "self_care"}, headers=world.h["patient"]
    )
    assert narrowed.json()
    assert all("self_care" in a["dispositions"] for a in narrowed.json())
    one = await client.get(f"/api/v1/education/articles/{SLUG}", headers=world.h["patient"])
    assert one.json()["sources"][0]["url"].startswith("https://")
    assert (
        await client.get("/api/v1/education/articles/nope", headers=world.h["patient"])
    ).status_code == 404
    assert (await client.get("/api/v1/education/articles")).status_code == 401
