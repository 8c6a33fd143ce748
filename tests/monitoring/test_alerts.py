"""Alerts end to end: dedupe, severity groups, confirmation, late readings judged as of their time, overrides
(audited with who and why), missing data, escalation after the deadline (clock-driven), ack/resolve."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from telecare.audit.models import AuditEntry
from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.time import advance_clock
from telecare.monitoring import tasks
from telecare.monitoring.models import Alert
from telecare.notifications.models import Notification
from tests.factories import bearer, token_for
from tests.monitoring.conftest import Clinic, bp, single

URL = "/api/v1/monitoring/readings"


async def post(client: httpx.AsyncClient, clinic: Clinic, items: list[dict[str, Any]]) -> dict[str, Any]:
    r = await client.post(URL, json=items, headers=bearer(clinic.key))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def alerts(db: Database) -> list[Alert]:
    async with db.unit_of_work() as s:
        return list((await s.execute(select(Alert).order_by(Alert.id))).scalars())


async def test_crisis_alert_is_deduplicated_then_reopens_after_resolution(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    cuff = clinic.serials["bp_cuff"]
    body = await post(client, clinic, [bp(cuff, 190, 100, 30), bp(cuff, 185, 125, 20)])
    assert body["alerts_opened"] == 1
    await post(client, clinic, [bp(cuff, 200, 110, 10), bp(cuff, 120, 80, 5)])
    [alert] = await alerts(db)
    assert (alert.rule_code, alert.tier, alert.status, alert.reading_count) == (
        "bp_crisis",
        "immediate",
        "open",
        3,
    )
    nurse = await token_for(db, clinic.nurse)
    r = await client.post(
        f"/api/v1/monitoring/alerts/{alert.id}/resolve",
        json={"note": "Called, meds taken"},
        headers=bearer(nurse),
    )
    assert r.json()["status"] == "resolved"
    assert r.json()["resolution_note"] == "Called, meds taken"
    await post(client, clinic, [bp(cuff, 195, 100, 1)])
    assert [(a.rule_code, a.status) for a in await alerts(db)] == [
        ("bp_crisis", "resolved"),
        ("bp_crisis", "open"),
    ]


async def test_only_the_most_severe_rule_of_a_group_fires(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    await post(client, clinic, [single(clinic.serials["glucose_meter"], "glucose", 50, "mg/dL", 5)])
    await post(client, clinic, [single(clinic.serials["glucose_meter"], "glucose", 65, "mg/dL", 4)])
    assert [(a.rule_code, a.tier) for a in await alerts(db)] == [
        ("glucose_low_l2", "immediate"),
        ("glucose_low_l1", "same_day"),
    ]


async def test_confirmation_rule_needs_a_repeat_within_the_window(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    cuff = clinic.serials["bp_cuff"]
    await post(client, clinic, [bp(cuff, 85, 55, 120)])
    assert await alerts(db) == []
    await post(client, clinic, [bp(cuff, 84, 56, 100)])  # 20 minutes later: outside the 15-minute window
    assert await alerts(db) == []
    # a late repeat measured 10 minutes after the 100-minute one confirms it, arriving out of order
    await post(client, clinic, [bp(cuff, 120, 80, 5), bp(cuff, 86, 58, 90)])
    [alert] = await alerts(db)
    assert (alert.rule_code, alert.reading_count) == ("bp_low", 2)


async def test_late_reading_is_judged_by_the_override_in_force_when_measured(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    nurse = await token_for(db, clinic.nurse)
    r = await client.put(
        f"/api/v1/monitoring/patients/{clinic.patient}/rules/spo2_low",
        json={"params": {"below": 85}, "reason": "COPD, baseline 86-88 % per pulmonology"},
        headers=bearer(nurse),
    )
    assert r.status_code == 200, r.text
    rule = next(x for x in r.json() if x["code"] == "spo2_low")
    assert rule["params"]["below"] == 85
    assert rule["overridden"]
    assert rule["override_by_user_id"] == clinic.nurse.user_id
    ox = clinic.serials["pulse_oximeter"]
    await post(client, clinic, [single(ox, "spo2", 87, "%", 0)])  # measured after the override: fine
    assert await alerts(db) == []
    await post(client, clinic, [single(ox, "spo2", 87, "%", 600)])  # measured before the override: below 90
    [alert] = await alerts(db)
    assert alert.rule_code == "spo2_low"
    assert "87 < 90" in alert.detail
    async with db.unit_of_work() as s:
        entry = (
            (
                await s.execute(
                    select(AuditEntry)
                    .where(AuditEntry.resource_type == "Goal", AuditEntry.action == "update")
                    .order_by(AuditEntry.id.desc())
                )
            )
            .scalars()
            .first()
        )
    assert entry is not None
    assert entry.actor_user_id == clinic.nurse.user_id
    assert entry.detail["reason"].startswith("COPD")
    assert entry.detail["params"] == {"below": 85}
    outsider = await token_for(db, clinic.outsider)
    r = await client.put(
        f"/api/v1/monitoring/patients/{clinic.patient}/rules/spo2_low",
        json={"params": {"below": 80}, "reason": "no"},
        headers=bearer(outsider),
    )
    assert r.status_code in (404, 422)


async def test_weight_gain_over_a_day(client: httpx.AsyncClient, db: Database, clinic: Clinic) -> None:
    scale = clinic.serials["scale"]
    await post(
        client,
        clinic,
        [single(scale, "weight", 180, "lb", 60 * 20), single(scale, "weight", 182.9, "lb", 60)],
    )
    assert await alerts(db) == []
    await post(client, clinic, [single(scale, "weight", 183.4, "lb", 30)])
    [alert] = await alerts(db)
    assert alert.rule_code == "weight_gain_day"
    assert "3.4 lb" in alert.detail


async def test_missing_data_alert_opens_and_data_resolves_it(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    await post(client, clinic, [bp(clinic.serials["bp_cuff"], 120, 80, 5)])
    assert (await tasks.run_due(db)).missing_opened == 0
    advance_clock(timedelta(days=3, minutes=1))
    assert (await tasks.run_due(db)).missing_opened == 1
    assert (await tasks.run_due(db)).missing_opened == 0  # deduplicated
    [alert] = await alerts(db)
    assert (alert.rule_code, alert.tier) == ("missing_data", "info")
    await post(client, clinic, [bp(clinic.serials["bp_cuff"], 120, 80, 1)])
    [alert] = await alerts(db)
    assert alert.status == "resolved"
    assert alert.resolution_note == "Readings resumed."


async def test_unacknowledged_alert_escalates_to_the_physician_after_its_deadline(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    cuff = clinic.serials["bp_cuff"]
    await post(client, clinic, [bp(cuff, 190, 100, 1)])  # immediate: 15 minutes
    await post(
        client, clinic, [single(clinic.serials["glucose_meter"], "glucose", 65, "mg/dL", 1)]
    )  # same day
    advance_clock(timedelta(minutes=14))
    assert (await tasks.run_due(db)).escalated == 0
    advance_clock(timedelta(minutes=2))
    assert (await tasks.run_due(db)).escalated == 1
    assert (await tasks.run_due(db)).escalated == 0  # once
    crisis, low = await alerts(db)
    assert crisis.escalated_to_user_id == clinic.physician.user_id
    assert low.escalated_at is None
    async with db.unit_of_work() as s:
        [note] = (await s.execute(select(Notification))).scalars().all()
    assert note.recipient_user_id == clinic.physician.user_id
    assert note.kind == "rpm_alert_escalation"
    assert "190" not in note.body
    # an acknowledged alert does not escalate
    nurse = await token_for(db, clinic.nurse)
    r = await client.post(
        f"/api/v1/monitoring/alerts/{low.id}/acknowledge", json={"note": "Calling now"}, headers=bearer(nurse)
    )
    assert r.json()["status"] == "acknowledged"
    advance_clock(timedelta(hours=5))
    assert (await tasks.run_due(db)).escalated == 0


async def test_alert_events_leave_only_after_commit(
    app: Any, client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    async with app.state.events.subscribe("rpm.alert") as queue:
        await post(client, clinic, [bp(clinic.serials["bp_cuff"], 190, 100, 1)])
        event = await asyncio.wait_for(queue.get(), 5)
        assert event["change"] == "opened"
        assert event["patient_id"] == clinic.patient
        # a rejected transaction (FHIR transaction with a bad entry) publishes nothing
        await post(client, clinic, [bp(clinic.serials["bp_cuff"], 120, 80, 2)])
        assert queue.empty()


async def test_worklist_orders_by_tier_and_hides_other_patients(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    await post(client, clinic, [single(clinic.serials["glucose_meter"], "glucose", 65, "mg/dL", 3)])
    await post(client, clinic, [bp(clinic.serials["bp_cuff"], 190, 100, 2)])
    nurse = await token_for(db, clinic.nurse)
    data = (await client.get("/api/v1/monitoring/alerts", headers=bearer(nurse))).json()
    assert [a["rule_code"] for a in data["alerts"]] == ["bp_crisis", "glucose_low_l1"]
    filtered = (await client.get("/api/v1/monitoring/alerts?program=copd", headers=bearer(nurse))).json()
    assert filtered["alerts"] == []
    outsider = await token_for(db, clinic.outsider)
    assert (await client.get("/api/v1/monitoring/alerts", headers=bearer(outsider))).json()["alerts"] == []


async def test_escalation_email_reaches_the_physician_over_smtp(
    settings: Settings, client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    from tests.mail import smtp_server, wait_for_mail

    with smtp_server() as (received, port):
        settings.smtp_host, settings.smtp_port = "127.0.0.1", port
        await post(client, clinic, [bp(clinic.serials["bp_cuff"], 200, 100, 1)])
        advance_clock(timedelta(minutes=16))
        assert (await tasks.run_due(db)).escalated == 1
        await wait_for_mail(received)
    [mail] = received
    assert mail.rcpt_tos == [clinic.physician.email]
    text = mail.content.decode()
    assert "Escalated RPM alert" in text
    assert f"/monitoring/patients/{clinic.patient}" in text
    from email import message_from_bytes, policy

    message = message_from_bytes(mail.content, policy=policy.default)
    body = message.get_body(("plain",))
    assert body is not None
    assert "200" not in body.get_content()  # no reading values in the body
