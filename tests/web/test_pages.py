"""Page-level behaviour without a browser (httpx against the app, SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from telecare.access.policy import Resource
from telecare.core.db import Database
from telecare.identity.models import Role
from telecare.web import chart
from tests.factories import add_to_care_team, make_org, make_patient, make_user, web_login


async def _counts_section(session: Any, principal: Any, patient: Any) -> dict[str, Any]:
    return {"members": [{"display_name": "Aggregate-only section", "credentials": "", "role": "x"}]}


async def test_chart_sections_render_only_for_roles_the_policy_allows(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A section guarded by the Aggregate grant: coordinators hold it, physicians do not.
    monkeypatch.setitem(
        chart._sections,
        "agg",
        chart.ChartSection(
            "agg", "Aggregates", _counts_section, "chart/care_team.html", Resource.AGGREGATE, 30
        ),
    )
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    coordinator = await make_user(db, org, Role.COORDINATOR)
    patient = await make_patient(db, org)
    assert isinstance(patient, int)
    assert doc.practitioner_id
    await add_to_care_team(db, patient_id=patient, practitioner_id=doc.practitioner_id, org_id=org)

    await web_login(client, doc)
    page = (await client.get(f"/patients/{patient}")).text
    assert re.findall(r'data-section="([^"]+)"', page) == ["contact", "care-team"]
    assert "Aggregate-only section" not in page

    client.cookies.clear()
    await web_login(client, coordinator)
    page = (await client.get(f"/patients/{patient}")).text
    assert re.findall(r'data-section="([^"]+)"', page) == ["contact", "care-team", "agg"]
    assert "Aggregate-only section" in page


async def test_pages_carry_no_inline_script_or_style_and_send_a_strict_csp(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    admin = await make_user(db, org, Role.ADMIN)
    r = await client.get("/login")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    pages = [r.text]
    await web_login(client, admin)
    for path in ("/home", "/admin/users", "/admin/users/new", "/admin/break-glass", "/stats", "/nowhere"):
        pages.append((await client.get(path)).text)
    for html in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), html
        assert "<style" not in html
        assert not re.search(r"\sstyle=", html)
        assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers


async def test_unknown_page_and_refused_page_are_friendly_html(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    informatics = await make_user(db, org, Role.INFORMATICS)
    r = await client.get("/no-such-page", headers={"accept": "text/html"})
    assert r.status_code == 404
    assert "We could not find that page" in r.text
    assert 'href="/login"' in r.text
    await web_login(client, informatics)
    r = await client.get("/admin/users")
    assert r.status_code == 403
    assert "does not have access" in r.text
    assert 'href="/home"' in r.text
