"""The patient chart shell and its section registry.

The shell opens the patient once through the policy layer (audited read) and renders each registered
section the principal's role may read. A later domain adds its part of the chart without editing the shell:

    from telecare.web.chart import ChartSection

    async def load_vitals(session, principal, patient):
        return {"readings": await monitoring_service.recent(session, principal, patient_id=patient.id)}

    CHART_SECTIONS = (
        ChartSection("vitals", "Vital signs", load_vitals, "monitoring/chart_vitals.html",
                     resource=Resource.OBSERVATION, order=50),
    )

and names `CHART_SECTIONS` in its entry of `telecare/domains.py`.
The loader must read through its domain's service (which authorises and audits); the shell only decides
whether the section is shown at all, from `POLICY[resource][role][read]` and the token scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.errors import Forbidden
from telecare.identity import service as identity
from telecare.identity.models import Patient

SectionLoader = Callable[[AsyncSession, Principal, Patient], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class ChartSection:
    key: str
    title: str
    loader: SectionLoader
    template: str
    resource: Resource
    order: int


@dataclass(frozen=True)
class RenderedSection:
    key: str
    title: str
    template: str
    data: Mapping[str, Any]


_sections: dict[str, ChartSection] = {}


def register_chart_section(section: ChartSection) -> None:
    """Add a chart section (called by the domain manifest, `telecare.domains`). `section.resource` is the
    policy resource whose read grant decides visibility; `section.template` receives the loader's mapping as
    `data` and the patient as `patient`."""
    existing = _sections.get(section.key)
    if existing is not None and existing.loader is not section.loader:
        raise ValueError(f"chart section {section.key!r} is already registered")
    _sections[section.key] = section


def sections_for(principal: Principal) -> list[ChartSection]:
    """The sections this principal's role (and token scopes) may read, in display order."""
    visible = []
    for section in sorted(_sections.values(), key=lambda s: (s.order, s.key)):
        try:
            access.reach_for(principal, section.resource, Action.READ)
        except Forbidden:
            continue
        visible.append(section)
    return visible


async def render_sections(
    session: AsyncSession, principal: Principal, patient: Patient
) -> list[RenderedSection]:
    out = []
    for section in sections_for(principal):
        data = await section.loader(session, principal, patient)
        out.append(RenderedSection(section.key, section.title, section.template, data))
    return out


# ---- the foundation's own sections ------------------------------------------------------------------------


async def _contact(session: AsyncSession, principal: Principal, patient: Patient) -> Mapping[str, Any]:
    # The shell already opened (and audited) this patient for Patient.read.
    return {"patient": patient}


async def _care_team(session: AsyncSession, principal: Principal, patient: Patient) -> Mapping[str, Any]:
    return {"members": await identity.care_team(session, principal, patient_id=patient.id)}


CHART_SECTIONS = (
    ChartSection(
        "contact",
        "Contact and demographics",
        _contact,
        "chart/contact.html",
        resource=Resource.PATIENT,
        order=10,
    ),
    ChartSection(
        "care-team", "Care team", _care_team, "chart/care_team.html", resource=Resource.CARE_TEAM, order=20
    ),
)
