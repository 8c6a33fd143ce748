"""The native batch door: conversion, plausibility with partial success, idempotency, backfill,
authorization."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from telecare.config import Settings
from telecare.core.db import Database
from telecare.monitoring.models import Reading
from tests.factories import bearer, make_device_key, token_for
from tests.monitoring.conftest import Clinic, at, bp, single

URL = "/api/v1/monitoring/readings"


async def count_readings(db: Database) -> int:
    async with db.unit_of_work() as s:
        return int((await s.execute(select(func.count(Reading.id)))).scalar_one())


async def test_units_are_converted_and_originals_kept(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    items = [
        single(clinic.serials["scale"], "weight", 180, "lb", 60),
        single(clinic.serials["thermometer"], "temperature", 98.6, "degF", 59),
        single(clinic.serials["glucose_meter"], "glucose", 5.5, "mmol/L", 58),
        bp(clinic.serials["bp_cuff"], 128, 82, 57),
    ]
    r = await client.post(URL, json=items, headers=bearer(clinic.key))
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 4
    async with db.unit_of_work() as s:
        rows = {x.kind: x for x in (await s.execute(select(Reading))).scalars()}
    w = rows["weight"]
    assert (w.code, w.unit, w.orig_unit, w.orig_value) == ("29463-7", "kg", "[lb_av]", 180)
    assert abs(w.value - 81.6466) < 0.001
    t = rows["temperature"]
    assert (t.code, t.unit, t.orig_unit) == ("8310-5", "Cel", "[degF]")
    assert abs(t.value - 37.0) < 0.001
    g = rows["glucose"]
    assert (g.code, g.unit, g.orig_unit) == ("41653-7", "mg/dL", "mmol/L")
    assert abs(g.value - 99.09) < 0.01
    b = rows["blood_pressure"]
    assert (b.code, b.value, b.value2, b.unit) == ("85354-9", 128, 82, "mm[Hg]")
    assert b.utc_offset_minutes == -300


async def test_implausible_items_rejected_valid_ones_stored(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    items = [
        bp(clinic.serials["bp_cuff"], 120, 80, 30),
        bp(clinic.serials["bp_cuff"], 900, 80, 29),
        single(clinic.serials["pulse_oximeter"], "spo2", 130, "%", 28),
        single(clinic.serials["pulse_oximeter"], "spo2", 97, "%", 27),
        {"device": clinic.serials["bp_cuff"], "kind": "blood_pressure", "systolic": 120, "unit": "mm[Hg]"},
        single(clinic.serials["scale"], "weight", 80, "furlongs", 26),
    ]
    r = await client.post(URL, json=items, headers=bearer(clinic.key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["created"], body["rejected"]) == (2, 4)
    fields = {(e["index"], e["field"]) for e in body["errors"]}
    assert (1, "1.systolic") in fields
    assert (2, "2.value") in fields
    assert (4, "4.measured_at") in fields
    assert (4, "4.diastolic") in fields or any(i == 4 for i, _ in fields)
    assert (5, "5.unit") in fields
    assert [i["status"] for i in body["items"]] == [
        "created",
        "rejected",
        "rejected",
        "created",
        "rejected",
        "rejected",
    ]
    assert await count_readings(db) == 2


async def test_malformed_request_stores_nothing(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    r = await client.post(
        URL, content=b"[{not json", headers={**bearer(clinic.key), "content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "body"
    r = await client.post(URL, json={"device": "x"}, headers=bearer(clinic.key))
    assert r.status_code == 422
    assert "array" in r.json()["errors"][0]["detail"]
    too_many = [bp(clinic.serials["bp_cuff"], 120, 80, 1)] * 10_001
    r = await client.post(URL, json=too_many, headers=bearer(clinic.key))
    assert r.status_code == 422
    assert r.json()["code"] == "batch_too_large"
    assert await count_readings(db) == 0


async def test_replaying_a_batch_inserts_nothing_and_close_readings_are_kept(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    serial = clinic.serials["bp_cuff"]
    batch = [bp(serial, 120 + i % 20, 80, 2000 - i) for i in range(1000)]
    batch.append(bp(serial, 121, 79, 0.5, reading_id="r-1"))
    # a second genuine reading one second after another one
    batch.append(bp(serial, 122, 78, 2000 - 1 / 60))
    r = await client.post(URL, json=batch, headers=bearer(clinic.key))
    assert r.json()["created"] == 1002
    replay = await client.post(URL, json=batch, headers=bearer(clinic.key))
    body = replay.json()
    assert (body["created"], body["duplicates"]) == (0, 1002)
    assert [i["id"] for i in body["items"]] == [i["id"] for i in r.json()["items"]]
    # the same device reading id under a re-spelled serial and a corrected timestamp is the same reading
    again = bp(serial.lower().replace("-", " "), 121, 79, 3, reading_id="r-1")
    r2 = await client.post(URL, json=[again], headers=bearer(clinic.key))
    assert r2.json()["duplicates"] == 1
    assert await count_readings(db) == 1002


async def test_backfill_and_out_of_order_history_is_accepted(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    serial = clinic.serials["scale"]
    recent = [single(serial, "weight", 80, "kg", 60)]
    assert (await client.post(URL, json=recent, headers=bearer(clinic.key))).json()["created"] == 1
    # ninety days of history arrive later, newest first
    history = [single(serial, "weight", 80 + d / 100, "kg", 60 * 24 * d) for d in range(90, 0, -1)][::-1]
    r = await client.post(URL, json=history, headers=bearer(clinic.key))
    assert r.json()["created"] == 90
    # and again, overlapping with what is stored
    r = await client.post(URL, json=history[:45] + recent, headers=bearer(clinic.key))
    assert (r.json()["created"], r.json()["duplicates"]) == (0, 46)
    assert await count_readings(db) == 91


async def test_device_key_posts_only_for_its_devices(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    items = [
        bp(clinic.other_serial, 120, 80, 10),
        bp("NOPE-1", 120, 80, 9),
        bp(clinic.serials["bp_cuff"], 120, 80, 8),
    ]
    r = await client.post(URL, json=items, headers=bearer(clinic.key))
    body = r.json()
    assert [i["status"] for i in body["items"]] == ["rejected", "rejected", "created"]
    assert body["errors"][0]["field"] == "0.device"
    r = await client.post(URL, json=items[:1], headers=bearer("tcdk_999_nope"))
    assert r.status_code == 401
    # a key for the other patient's device cannot post for this patient's cuff
    async with db.unit_of_work() as s:
        from telecare.monitoring.models import Device

        other_id = (
            await s.execute(select(Device.id).where(Device.serial == clinic.other_serial))
        ).scalar_one()
    other_key = await make_device_key(db, clinic.org, [other_id])
    r = await client.post(URL, json=[bp(clinic.serials["bp_cuff"], 120, 80, 7)], headers=bearer(other_key))
    assert r.status_code == 422
    assert await count_readings(db) == 1


async def test_nurse_outside_care_team_cannot_post_or_read(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    outsider = await token_for(db, clinic.outsider)
    r = await client.post(URL, json=[bp(clinic.serials["bp_cuff"], 120, 80, 5)], headers=bearer(outsider))
    assert r.status_code == 422
    assert r.json()["errors"][0]["detail"] == "patient not found"
    nurse = await token_for(db, clinic.nurse)
    r = await client.post(URL, json=[bp(clinic.serials["bp_cuff"], 120, 80, 5)], headers=bearer(nurse))
    assert r.json()["created"] == 1
    r = await client.get(f"/api/v1/monitoring/patients/{clinic.patient}/readings", headers=bearer(outsider))
    assert r.status_code == 404
    r = await client.get(f"/api/v1/monitoring/patients/{clinic.patient}/readings", headers=bearer(nurse))
    assert [x["value"] for x in r.json()] == [120]
    assert await count_readings(db) == 1


async def test_revoked_key_is_refused(client: httpx.AsyncClient, db: Database, clinic: Clinic) -> None:
    from telecare.core.time import utc_now
    from telecare.monitoring.models import DeviceKey

    async with db.unit_of_work() as s:
        for k in (await s.execute(select(DeviceKey))).scalars():
            k.revoked_at = utc_now()
    r = await client.post(URL, json=[bp(clinic.serials["bp_cuff"], 120, 80, 5)], headers=bearer(clinic.key))
    assert r.status_code == 401
    assert at(0)


async def test_concurrent_device_posts_are_group_committed_and_answered_each(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    import asyncio

    serial = clinic.serials["bp_cuff"]
    bodies = [[bp(serial, 100 + i % 50, 70, 500 - i)] for i in range(60)]
    bodies[7] = [bp(serial, 900, 70, 1)]  # rejected on its own; the others in the same commit are stored
    responses = await asyncio.gather(*(client.post(URL, json=b, headers=bearer(clinic.key)) for b in bodies))
    assert [r.status_code for r in responses].count(422) == 1
    assert responses[7].status_code == 422
    ids = [r.json()["items"][0]["id"] for n, r in enumerate(responses) if n != 7]
    assert len(set(ids)) == 59
    assert await count_readings(db) == 59


async def test_device_key_is_rate_limited(
    settings: Settings, client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    settings.rpm_device_requests_per_minute = 3
    statuses = []
    for i in range(4):
        r = await client.post(
            URL, json=[bp(clinic.serials["bp_cuff"], 120, 80, 10 - i)], headers=bearer(clinic.key)
        )
        statuses.append(r.status_code)
    assert statuses == [200, 200, 200, 429]
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["code"] == "rate_limited"
    assert await count_readings(db) == 3
