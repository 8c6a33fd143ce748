"""Sabotage check of the read guard in the authorization matrix (tests/access/test_matrix.py): with the audit
entries of one resource type's successful reads dropped (as if `access.record_access` returned early for
it), the matrix's check of an allowed read of that type must fail. One case per patient-data resource type
and read action the API serves."""

from __future__ import annotations

from typing import Any

import pytest

from telecare.access.policy import PATIENT_COMPARTMENT, Action, Reach, Resource, allowed_reach
from telecare.audit import service as audit
from telecare.audit.models import AuditOutcome
from telecare.identity.models import Role
from tests.access.matrix_kit import (
    PROBES,
    READS,
    TARGETS,
    Expect,
    Rel,
    Surface,
    World,
    assert_read_audited,
    audit_mark,
    caller_for,
    expectation,
)


def _sabotage_cases() -> list[tuple[Resource, Action, Role]]:
    cases = []
    for resource in sorted(PATIENT_COMPARTMENT, key=str):
        for action in sorted(READS, key=str):
            probe_ = PROBES.get((resource, action))
            if probe_ is None or probe_.perform is None:
                continue
            role = next(
                (r for r in Role if allowed_reach(r, resource, action) in (Reach.OWN, Reach.CARE, Reach.ORG)),
                None,
            )
            if role is not None:
                cases.append((resource, action, role))
    return cases


CASES = _sabotage_cases()


def test_every_patient_data_type_is_sabotaged() -> None:
    assert {r for r, _, _ in CASES} >= {Resource.PATIENT, Resource.OBSERVATION, Resource.VISIT_NOTE}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("resource", "action", "role"), CASES, ids=[f"{r}-{a}-{o}" for r, a, o in CASES])
async def test_an_unaudited_read_fails_the_matrix(
    world: World, monkeypatch: pytest.MonkeyPatch, resource: Resource, action: Action, role: Role
) -> None:
    real = audit.record

    async def dropping(session: Any, actor: Any, **kw: Any) -> Any:
        if (
            kw.get("resource_type") == str(resource)
            and kw.get("patient_id") is not None
            and kw.get("outcome", AuditOutcome.SUCCESS) == AuditOutcome.SUCCESS
        ):
            return None  # the sabotage: this type's reads go unaudited
        return await real(session, actor, **kw)

    probe_ = PROBES[(resource, action)]
    assert probe_.perform is not None
    caller = caller_for(world, role, Surface.TOKEN)
    target = await TARGETS[resource](world, caller, Rel.OWN)
    assert expectation(role, resource, action, Rel.OWN, collection=probe_.collection) is Expect.ALLOW
    # Unsabotaged, the read passes the guard...
    mark = await audit_mark(world)
    outcome = await probe_.perform(world, caller, target)
    assert 200 <= outcome.response.status_code < 300, outcome.response.text
    await assert_read_audited(world, probe_, target, mark, outcome)
    # ...and with its audit entries dropped, the same read fails it.
    monkeypatch.setattr(audit, "record", dropping)
    mark = await audit_mark(world)
    outcome = await probe_.perform(world, caller, target)
    assert 200 <= outcome.response.status_code < 300, outcome.response.text
    with pytest.raises(AssertionError, match="unaudited read"):
        await assert_read_audited(world, probe_, target, mark, outcome)
