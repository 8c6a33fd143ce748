"""Licensure gate over the stored licences and compact privileges, and the coordinators' coverage view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access.policy import Action, Resource
from telecare.access.service import reach_for
from telecare.auth.principal import Principal
from telecare.core.errors import Conflict
from telecare.identity.models import CompactPrivilege, License, Practitioner, User
from telecare.licensure.compact_members import COMPACTS
from telecare.licensure.rules import (
    Authority,
    GateResult,
    LicenceFact,
    PrivilegeFact,
    authority_in,
    serviceable_states,
)

EXPIRY_WARNING_DAYS = 60  # issue 3: coordinators see licences expiring within 60 days


class ProviderNotLicensedError(Conflict):
    """The practitioner holds no licence or compact privilege for the patient's state on the visit date."""

    code = "provider_not_licensed"
    title = "Practitioner not licensed in the patient's state"


@dataclass(frozen=True)
class Credentials:
    licences: tuple[LicenceFact, ...]
    privileges: tuple[PrivilegeFact, ...]


async def credentials_for(session: AsyncSession, practitioner_ids: Sequence[int]) -> dict[int, Credentials]:
    ids = list(set(practitioner_ids))
    lic_rows = (await session.execute(select(License).where(License.practitioner_id.in_(ids)))).scalars()
    priv_rows = (
        await session.execute(select(CompactPrivilege).where(CompactPrivilege.practitioner_id.in_(ids)))
    ).scalars()
    lics: dict[int, list[LicenceFact]] = {i: [] for i in ids}
    privs: dict[int, list[PrivilegeFact]] = {i: [] for i in ids}
    for lic in lic_rows:
        lics[lic.practitioner_id].append(
            LicenceFact(lic.state, lic.license_type, str(lic.source), lic.issued_on, lic.expires_on)
        )
    for p in priv_rows:
        privs[p.practitioner_id].append(
            PrivilegeFact(str(p.compact), p.home_state, p.issued_on, p.expires_on)
        )
    return {i: Credentials(tuple(lics[i]), tuple(privs[i])) for i in ids}


async def gate(
    session: AsyncSession,
    *,
    practitioner_id: int,
    state: str,
    on: date,
    practitioner_location: str | None = None,
) -> GateResult:
    """Check one practitioner against one patient state and date."""
    creds = (await credentials_for(session, [practitioner_id]))[practitioner_id]
    return authority_in(
        state, on, creds.licences, creds.privileges, COMPACTS, practitioner_location=practitioner_location
    )


async def require_licensed(session: AsyncSession, *, practitioner_id: int, state: str, on: date) -> Authority:
    result = await gate(session, practitioner_id=practitioner_id, state=state, on=on)
    if result.authority is None:
        raise ProviderNotLicensedError(
            " ".join(result.reasons),
            extra={"state": state, "date": on.isoformat(), "reasons": result.reasons},
        )
    return result.authority


async def licensed_practitioners(
    session: AsyncSession, *, practitioner_ids: Sequence[int], state: str, on: date
) -> dict[int, GateResult]:
    creds = await credentials_for(session, practitioner_ids)
    return {pid: authority_in(state, on, c.licences, c.privileges, COMPACTS) for pid, c in creds.items()}


@dataclass(frozen=True)
class ExpiringCredential:
    kind: str  # "licence" | "nlc" | "psypact"
    state: str
    expires_on: date
    days_left: int


@dataclass(frozen=True)
class CoverageRow:
    practitioner_id: int
    display_name: str
    credentials: str
    states: dict[str, Authority]
    expiring: list[ExpiringCredential]


async def coverage(session: AsyncSession, principal: Principal, *, today: date) -> list[CoverageRow]:
    """Which states each practitioner of the organization can serve today; credentials lapsing within
    60 days. Staff only (Practitioner read)."""
    reach_for(principal, Resource.PRACTITIONER, Action.SEARCH)
    rows = (
        await session.execute(
            select(Practitioner, User.display_name)
            .join(User, User.id == Practitioner.user_id)
            .where(Practitioner.org_id == principal.org_id, User.is_active.is_(True))
            .order_by(User.display_name)
        )
    ).all()
    creds = await credentials_for(session, [p.id for p, _ in rows])
    horizon = today + timedelta(days=EXPIRY_WARNING_DAYS)
    out: list[CoverageRow] = []
    for prac, name in rows:
        c = creds[prac.id]
        expiring = [
            ExpiringCredential("licence", lic.state, lic.expires_on, (lic.expires_on - today).days)
            for lic in c.licences
            if lic.issued_on <= today <= lic.expires_on <= horizon
        ] + [
            ExpiringCredential(p.compact, p.home_state, p.expires_on, (p.expires_on - today).days)
            for p in c.privileges
            if p.issued_on <= today <= p.expires_on <= horizon
        ]
        expiring.sort(key=lambda e: e.expires_on)
        out.append(
            CoverageRow(
                prac.id,
                name,
                prac.credentials,
                serviceable_states(today, c.licences, c.privileges, COMPACTS),
                expiring,
            )
        )
    return out
