"""schemathesis against the app's own OpenAPI schema, in-process over ASGI (docs/security.md#goal-12):
for a token of every role and for no token, every operation gets generated valid (positive) and invalid
(negative) requests. Asserted: no 5xx, every documented response (including the problem+json error
bodies) matches its schema, and without credentials everything but the public health probe is 401.

Bounded for the suite: `MAX_EXAMPLES` per operation and mode, SQLite only. Authorization and storage
behaviour on PostgreSQL is covered case by case by the matrix (tests/access); this test hunts for crashes
and contract drift in request parsing and serialisation, which do not depend on the database, except for
integer overflow which the matrix's PostgreSQL run cannot reach (both backends reject ids above 2**31-1
at the schema, see core/params.py, so SQLite exercising that path suffices). TELECARE_FUZZ_EXAMPLES raises
the bound for a longer run (docs/security.md#goal-12 asks for 100)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi as st_asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from telecare.config import Mode, Settings
from telecare.core.db import Database
from telecare.identity.models import Role
from tests.conftest import FAST_ARGON2
from tests.factories import Account, add_to_care_team, make_org, make_patient, make_user, token_for

MAX_EXAMPLES = int(os.environ.get("TELECARE_FUZZ_EXAMPLES", "4"))
# The health probe and the FHIR CapabilityStatement (public by the FHIR spec, see test_route_coverage.py).
PUBLIC_OPERATIONS = {"GET /healthz", "GET /fhir/R4/metadata"}


@dataclass
class FuzzWorld:
    app: Any
    schema: Any
    tokens: dict[str, str]


async def _populate(settings: Settings) -> dict[str, str]:
    db = Database(settings)
    try:
        org = await make_org(db)
        accounts: dict[Role, Account] = {
            r: await make_user(db, org, r) for r in Role if r is not Role.PATIENT
        }
        own = await make_patient(db, org, with_login=True)
        assert isinstance(own, Account)
        accounts[Role.PATIENT] = own
        assert own.patient_id is not None
        for role in (Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST):
            prac = accounts[role].practitioner_id
            assert prac is not None
            await add_to_care_team(db, patient_id=own.patient_id, practitioner_id=prac, org_id=org)
        for _ in range(3):
            await make_patient(db, org)
        return {str(role): await token_for(db, acc) for role, acc in accounts.items()}
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def fuzz_world(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzWorld]:
    from telecare.app import create_app
    from telecare.domains import install as install_domains

    install_domains()
    path = tmp_path_factory.mktemp("fuzz") / "telecare.db"
    shutil.copyfile(sqlite_template, path)
    settings = Settings(
        mode=Mode.TEST,
        database_url=f"sqlite+aiosqlite:///{path}",
        data_dir=tmp_path_factory.mktemp("fuzz-data"),
        session_secret="test-session-secret-" + "x" * 32,  # type: ignore[arg-type]
        audit_hmac_key="test-audit-key-" + "y" * 32,  # type: ignore[arg-type]
        _env_file=None,
        **FAST_ARGON2,
    )  # type: ignore[call-arg]
    tokens = asyncio.run(_populate(settings))
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield FuzzWorld(app, schema, tokens)
    finally:
        st_asgi.shutdown_lifespans()


def _run_operation(
    operation: Any, mode: GenerationMode, headers: dict[str, str], anonymous: bool, failures: list[str]
) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    where = f"{label} [{mode}]"

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        try:
            response = case.call(headers=headers)
        except Exception as exc:  # the server error middleware re-raises after sending its 500
            failures.append(f"{where} -> {type(exc).__name__}: {case.as_curl_command()}")
            return
        if response.status_code >= 500:
            failures.append(f"{where} -> {response.status_code}: {case.as_curl_command()}")
            return
        if anonymous and label not in PUBLIC_OPERATIONS and response.status_code not in (401, 413):
            failures.append(f"{where} anonymous -> {response.status_code}: {case.as_curl_command()}")
            return
        try:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        except Exception as exc:  # a schema violation: record it with its reproducer
            failures.append(f"{where} {type(exc).__name__}: {str(exc)[:400]}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # No parameters or body to make invalid (e.g. GET /me): nothing negative to send.
        assert mode is GenerationMode.NEGATIVE, label


@pytest.mark.parametrize("caller", [*(str(r) for r in Role), "anonymous"])
def test_api_fuzz_no_server_errors_no_schema_violations(fuzz_world: FuzzWorld, caller: str) -> None:
    anonymous = caller == "anonymous"
    headers = {} if anonymous else {"Authorization": f"Bearer {fuzz_world.tokens[caller]}"}
    failures: list[str] = []
    operations = [result.ok() for result in fuzz_world.schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_operation(operation, mode, headers, anonymous, failures)
    assert failures == [], "\n".join(failures)
