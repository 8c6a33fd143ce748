"""Nightscout-compatible door: xDrip+-style uploads with the SHA-1 api-secret, read-back newest first."""

from __future__ import annotations

import hashlib

import httpx

from telecare.core.db import Database
from telecare.core.time import utc_now
from tests.factories import make_nightscout_secret
from tests.monitoring.conftest import Clinic


def entry(ms: int, sgv: float, direction: str = "Flat") -> dict[str, object]:
    from datetime import UTC, datetime, timedelta, timezone

    local = datetime.fromtimestamp(ms / 1000, UTC).astimezone(timezone(timedelta(hours=1)))
    return {
        "type": "sgv",
        "sgv": sgv,
        "date": ms,
        "dateString": local.isoformat(timespec="milliseconds"),
        "device": "xDrip-DexcomG6",
        "direction": direction,
    }


async def test_uploader_posts_and_reads_back(client: httpx.AsyncClient, db: Database, clinic: Clinic) -> None:
    secret = await make_nightscout_secret(db, clinic.patient)
    headers = {"api-secret": hashlib.sha1(secret.encode()).hexdigest()}
    now_ms = int(utc_now().timestamp() * 1000)
    entries = [entry(now_ms - i * 300_000, 100 + i) for i in range(12)]
    r = await client.post("/api/v1/entries", json=entries, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["created"] == 12
    # uploaders resend their backlog, sometimes under another device name
    resend = [{**e, "device": "xDrip-G6 v2"} for e in entries[:6]]
    r = await client.post("/api/v1/entries", json=resend, headers=headers)
    assert (r.json()["created"], r.json()["duplicates"]) == (0, 6)
    # one second apart is a different reading
    r = await client.post("/api/v1/entries", json=entry(now_ms - 1000, 150), headers=headers)
    assert r.json()["created"] == 1
    got = await client.get("/api/v1/entries/sgv.json", params={"count": 3}, headers=headers)
    data = got.json()
    assert [e["sgv"] for e in data] == [100, 150, 101]
    assert data[0]["date"] == now_ms
    assert data[0]["direction"] == "Flat"
    assert data[0]["type"] == "sgv"
    assert data[0]["dateString"].endswith("+01:00")
    default = await client.get("/api/v1/entries.json", headers=headers)
    assert len(default.json()) == 10


async def test_wrong_or_plain_secret_refused_and_bad_entries_named(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    secret = await make_nightscout_secret(db, clinic.patient)
    assert (await client.get("/api/v1/entries.json", headers={"api-secret": secret})).status_code == 401
    wrong = hashlib.sha1(b"not the secret").hexdigest()
    assert (await client.get("/api/v1/entries.json", headers={"api-secret": wrong})).status_code == 401
    headers = {"api-secret": hashlib.sha1(secret.encode()).hexdigest()}
    now_ms = int(utc_now().timestamp() * 1000)
    r = await client.post(
        "/api/v1/entries",
        json=[entry(now_ms, 2000), entry(now_ms - 60_000, 120), {"sgv": 100}],
        headers=headers,
    )
    body = r.json()
    assert (body["created"], body["rejected"]) == (1, 2)
    assert {e["field"] for e in body["errors"]} == {"0.sgv", "2.date"}


async def test_mmol_entries_are_converted(client: httpx.AsyncClient, db: Database, clinic: Clinic) -> None:
    secret = await make_nightscout_secret(db, clinic.patient)
    headers = {"api-secret": hashlib.sha1(secret.encode()).hexdigest()}
    now_ms = int(utc_now().timestamp() * 1000)
    r = await client.post("/api/v1/entries", json=[{**entry(now_ms, 5.5), "units": "mmol"}], headers=headers)
    assert r.json()["created"] == 1
    got = (await client.get("/api/v1/entries/sgv.json", headers=headers)).json()
    assert got[0]["sgv"] == 99
