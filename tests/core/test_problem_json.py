"""One error model on the API (RFC 9457 problem+json): every error names what was wrong, 422 lists each
offending field, oversized bodies are refused with 413 before they are parsed, and no health data (names,
MRNs, birth dates) appears in any error body or any log line (caplog captures every logger at DEBUG while
the errors are provoked, including an unexpected exception whose message carries a name and an MRN)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from telecare.config import Settings
from telecare.core.db import Database
from telecare.identity.models import Role
from tests.conftest import make_settings
from tests.factories import bearer, make_org, make_patient, make_user, token_for

LIMIT = 4096
PHI = ("Zebulon", "Quartermaine", "MRN-PHI-77", "1961-04-23")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", max_body_bytes=LIMIT, log_level="DEBUG")


async def _coordinator(db: Database) -> tuple[int, dict[str, str]]:
    org = await make_org(db)
    coordinator = await make_user(db, org, Role.COORDINATOR)
    return org, bearer(await token_for(db, coordinator))


def _assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://telecare.dev/problems/{code}"
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == r.request.url.path
    return body


def _fields(body: dict[str, Any]) -> list[str]:
    return sorted(e["field"] for e in body["errors"])


async def test_422_names_every_offending_field_and_echoes_no_values(
    client: httpx.AsyncClient, db: Database
) -> None:
    _, headers = await _coordinator(db)
    payload = {
        "mrn": "MRN PHI 77 Quartermaine",
        "given_name": "",
        "family_name": "Quartermaine" * 10,
        "birth_date": "2999-04-23",
        "sex": "Zebulon",
        "state": "Quartermaine",
        "email": "zebulon.quartermaine@quartermaine",
        "phone": "Zebulon",
        "postal_code": "Quart",
        "org_id": 2,
    }
    r = await client.post("/api/v1/patients", json=payload, headers=headers)
    body = _assert_problem(r, 422, "validation_failed")
    assert _fields(body) == sorted(
        [
            "mrn",
            "given_name",
            "family_name",
            "birth_date",
            "sex",
            "state",
            "email",
            "phone",
            "postal_code",
            "org_id",
        ]
    )
    assert all(e["detail"] for e in body["errors"])
    for value in ("Zebulon", "Quartermaine", "2999-04-23"):
        assert value not in r.text

    r = await client.post("/api/v1/patients", json={"mrn": "A1"}, headers=headers)
    body = _assert_problem(r, 422, "validation_failed")
    assert _fields(body) == ["birth_date", "family_name", "given_name", "sex", "state"]

    r = await client.get("/api/v1/patients", params={"limit": 0, "state": "Q"}, headers=headers)
    assert _fields(_assert_problem(r, 422, "validation_failed")) == ["limit", "state"]
    r = await client.get("/api/v1/patients/not-a-number", headers=headers)
    assert _fields(_assert_problem(r, 422, "validation_failed")) == ["patient_id"]
    r = await client.get(f"/api/v1/patients/{2**70}", headers=headers)
    assert _fields(_assert_problem(r, 422, "validation_failed")) == ["patient_id"]
    r = await client.post(
        "/api/v1/patients",
        content=b'{"mrn": "Quartermaine",',
        headers=headers | {"content-type": "application/json"},
    )
    body = _assert_problem(r, 422, "validation_failed")
    assert "Quartermaine" not in r.text
    assert body["errors"]


async def test_other_api_errors_are_problem_json_with_a_stable_code(
    client: httpx.AsyncClient, db: Database
) -> None:
    org, headers = await _coordinator(db)
    r = await client.get("/api/v1/patients")
    _assert_problem(r, 401, "not_authenticated")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.get("/api/v1/patients", headers={"Authorization": "Bearer tc_1_wrong"})
    _assert_problem(r, 401, "not_authenticated")
    r = await client.get("/api/v1/patients", headers={"Authorization": "Basic abc"})
    _assert_problem(r, 401, "not_authenticated")
    r = await client.get("/api/v1/tokens", headers=headers)
    _assert_problem(r, 403, "forbidden")
    r = await client.get("/api/v1/patients/999999", headers=headers)
    _assert_problem(r, 404, "patient_not_found")
    r = await client.get("/api/v1/no-such-thing", headers=headers)
    _assert_problem(r, 404, "not_found")
    r = await client.delete("/api/v1/patients", headers=headers)
    _assert_problem(r, 405, "method_not_allowed")
    pid = await make_patient(db, org, mrn="MRN-PHI-77")
    assert isinstance(pid, int)
    new = {
        "mrn": "MRN-PHI-77",
        "given_name": "A",
        "family_name": "B",
        "birth_date": "1961-04-23",
        "sex": "male",
    }
    r = await client.post("/api/v1/patients", json=new | {"state": "VT"}, headers=headers)
    body = _assert_problem(r, 409, "mrn_taken")
    assert _fields(body) == ["mrn"]
    assert "MRN-PHI-77" not in r.text


async def test_unauthenticated_malformed_requests_get_401_not_the_contract(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/patients", content=b"\x00\xff", headers={"content-type": "application/json"}
    )
    _assert_problem(r, 401, "not_authenticated")
    r = await client.post("/api/v1/patients", json={"mrn": 5})
    _assert_problem(r, 401, "not_authenticated")
    r = await client.get("/api/v1/patients/abc")
    _assert_problem(r, 401, "not_authenticated")
    # Malformed or absurd bearer tokens are 401, never a server error.
    for token in ("tc_99999999999999999999999_x", "tc_\u00b2_x", "tc__", "tc_1", "x" * 300):
        r = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}".encode("latin-1")})
        _assert_problem(r, 401, "not_authenticated")


class _CountingBody:
    """A streamed request body that records how much of it the server pulled."""

    def __init__(self, chunks: int, size: int) -> None:
        self.chunks, self.size, self.sent = chunks, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.sent += 1
            yield b"{" * self.size


async def test_body_limit_413_before_parsing(client: httpx.AsyncClient, db: Database) -> None:
    _, headers = await _coordinator(db)
    # Declared too large: refused from the header alone (the body is not valid JSON and is never parsed:
    # parsing it would give 422) and before authentication.
    big = b"{" * (LIMIT + 1)
    for extra in ({}, headers):
        r = await client.post(
            "/api/v1/patients", content=big, headers=extra | {"content-type": "application/json"}
        )
        body = _assert_problem(r, 413, "payload_too_large")
        assert _fields(body) == ["body"]
    # Streamed without a length: reading stops at the limit, long before the end of the stream.
    stream = _CountingBody(chunks=1000, size=1024)
    r = await client.post(
        "/api/v1/patients", content=stream, headers=headers | {"content-type": "application/json"}
    )
    _assert_problem(r, 413, "payload_too_large")
    assert stream.sent <= LIMIT // 1024 + 2
    # Just under the limit goes through to validation.
    r = await client.post(
        "/api/v1/patients",
        content=b" " * (LIMIT - 2) + b"{}",
        headers=headers | {"content-type": "application/json"},
    )
    assert r.status_code == 422


async def test_no_health_data_in_error_bodies_or_log_lines(
    client: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, headers = await _coordinator(db)
    other_org = await make_org(db)
    pid = await make_patient(
        db,
        org,
        mrn="MRN-PHI-77",
        given_name="Zebulon",
        family_name="Quartermaine",
        birth_date=_date("1961-04-23"),
    )
    foreign = await make_patient(db, other_org, given_name="Zebulon", family_name="Quartermaine")
    doctor = await make_user(db, org, Role.PHYSICIAN)
    doctor_headers = bearer(await token_for(db, doctor))
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []

    async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
        r = await client.request(method, url, **kwargs)
        assert r.status_code >= 400, (url, r.status_code)
        bodies.append(r.text)
        return r

    # Validation errors carrying the patient's details.
    await call(
        "POST",
        "/api/v1/patients",
        json={
            "mrn": "MRN-PHI-77",
            "given_name": "Zebulon",
            "family_name": "Quartermaine",
            "birth_date": "1961-04-23",
            "sex": "male",
            "state": "VT",
        },
        headers=headers,
    )
    await call(
        "PATCH", f"/api/v1/patients/{pid}", json={"given_name": "Zebulon", "state": None}, headers=headers
    )
    await call("PATCH", f"/api/v1/patients/{pid}", json={"email": "Zebulon Quartermaine"}, headers=headers)
    await call("GET", "/api/v1/patients", params={"name": "Zebulon Quartermaine" * 10}, headers=headers)
    # Refusals of a patient's record, in and outside the organization.
    await call("GET", f"/api/v1/patients/{pid}", headers=doctor_headers)
    await call("GET", f"/api/v1/patients/{foreign}/$export", headers=headers)
    await call(
        "POST",
        f"/api/v1/patients/{pid}/break-glass",
        json={"reason": "Zebulon Quartermaine collapsed", "password": "wrong password"},
        headers=doctor_headers,
    )
    # An unexpected failure whose message holds a name and an MRN: logged by type and place only.
    from telecare.identity import service

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("lookup failed for " + " ".join(PHI))  # no literal: tracebacks quote source lines

    monkeypatch.setattr(service, "get_patient", broken)
    with pytest.raises(RuntimeError):  # the server error middleware re-raises after sending its 500
        await client.get(f"/api/v1/patients/{pid}", headers=headers)
    unexpected = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert unexpected
    assert "RuntimeError" in unexpected[-1].getMessage()

    # What a production server would log for these requests: uvicorn's access line for the name search. (An
    # in-process uvicorn started by an earlier test in this worker leaves the logger at WARNING.)
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        "/api/v1/patients?name=Zebulon+Quartermaine",
        "1.1",
        422,
    )
    # The test client's own request log (httpx) is not the server's and is left out.
    server_records = [rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(rec.getMessage() + " " + json.dumps(rec.args, default=str) for rec in server_records)
    assert "/api/v1/patients?[query omitted]" in logged
    assert len(bodies) == 7
    for value in PHI:
        for body in bodies:
            assert value not in body, (value, body)
        assert value not in logged, value


def _date(text: str) -> Any:
    from datetime import date

    return date.fromisoformat(text)
