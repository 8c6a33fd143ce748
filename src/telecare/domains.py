"""The domain manifest: every domain's models, routers, pages, CLI commands, background tasks and the
registrations it makes in other domains' registries (care relationships, patient exporters, chart sections,
navigation links).

Nothing registers itself as a side effect of being imported: `install()` reads this list, imports what it
names and registers it, once per process. `create_app`, the CLI, Alembic and the tests call it. A new domain
adds one `Domain(...)` entry here; the architecture test (tests/test_architecture.py) checks that every
module named here exists and that every router the app serves comes from this list.

Names are "module:attribute" strings so that a process that needs only the tables (Alembic) does not import
the web layer."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Domain:
    name: str
    models: tuple[str, ...] = ()
    # APIRouters (REST, FHIR, sockets), included in manifest order, before the page routers.
    routers: tuple[str, ...] = ()
    # APIRouters of server-rendered pages, included after every API router.
    pages: tuple[str, ...] = ()
    # (command group, "module:typer app") added to the `telecare` CLI.
    cli: tuple[tuple[str, str], ...] = ()
    # async `fn(app)` loops started in the app lifespan (clock-driven jobs).
    tasks: tuple[str, ...] = ()
    # `fn(principal) -> Select[patient id]`: extra sources of clinician-patient relationships.
    care_relationships: tuple[str, ...] = ()
    # (section, "module:fn") adding the domain's part of the patient compartment to exports.
    exporters: tuple[tuple[str, str], ...] = ()
    # "module:CONSTANT" tuples of `web.chart.ChartSection` and `web.templating.NavItem`.
    chart_sections: tuple[str, ...] = ()
    nav_items: tuple[str, ...] = ()


DOMAINS: tuple[Domain, ...] = (
    Domain(
        "identity",
        models=("telecare.identity.models",),
        routers=("telecare.identity.api:router",),
        pages=("telecare.identity.pages:router", "telecare.identity.admin_pages:router"),
        chart_sections=("telecare.web.chart:CHART_SECTIONS",),
    ),
    Domain("auth", pages=("telecare.auth.pages:router",)),
    Domain(
        "audit",
        models=("telecare.audit.models",),
        routers=("telecare.audit.api:router",),
        tasks=("telecare.audit.sealer:background_loop",),
    ),
    Domain("access", models=("telecare.access.models",), routers=("telecare.access.api:router",)),
    Domain("notifications", models=("telecare.notifications.models",)),
    Domain(
        "scheduling",
        models=("telecare.scheduling.models",),
        routers=("telecare.scheduling.api:router",),
        care_relationships=("telecare.scheduling.repository:visit_patients",),
        tasks=("telecare.scheduling.tasks:background_loop",),
    ),
    Domain(
        "visits",
        models=("telecare.visits.models",),
        routers=(
            "telecare.visits.api:router",
            "telecare.visits.live.api:router",
            "telecare.visits.live.rooms:router",
            "telecare.visits.live.call:router",
        ),
        pages=("telecare.visits.pages:router", "telecare.visits.live.pages:router"),
        exporters=(("visits", "telecare.visits.notes:export_visits"),),
        chart_sections=("telecare.visits.pages:CHART_SECTIONS",),
        nav_items=("telecare.visits.pages:NAV_ITEMS",),
    ),
    Domain("billing", models=("telecare.billing.models",), routers=("telecare.billing.api:router",)),
    # Stored files: the download route; uploads come with the records that own files (message attachments).
    Domain(
        "files",
        models=("telecare.files.models",),
        routers=("telecare.files.api:router",),
        cli=(("files", "telecare.files.cli:files_app"),),
    ),
    Domain(
        "monitoring",
        models=("telecare.monitoring.models",),
        routers=("telecare.monitoring.api:router", "telecare.monitoring.nightscout:router"),
        pages=("telecare.monitoring.pages:router",),
        cli=(
            ("devices", "telecare.monitoring.cli:devices_app"),
            ("nightscout", "telecare.monitoring.cli:nightscout_app"),
            ("monitoring", "telecare.monitoring.cli:monitoring_app"),
        ),
        tasks=("telecare.monitoring.tasks:background_loop",),
        exporters=(("remote_monitoring", "telecare.monitoring.service:export_monitoring"),),
        chart_sections=("telecare.monitoring.pages:CHART_SECTIONS",),
        nav_items=("telecare.monitoring.pages:NAV_ITEMS",),
    ),
    Domain(
        "messaging",
        models=("telecare.messaging.models",),
        routers=("telecare.messaging.api:router",),
        pages=("telecare.messaging.pages:router",),
        chart_sections=("telecare.messaging.pages:CHART_SECTIONS",),
        nav_items=("telecare.messaging.pages:NAV_ITEMS",),
        care_relationships=("telecare.messaging.repository:inbox_patients",),
        exporters=(("messaging", "telecare.messaging.service:export_messaging"),),
    ),
    Domain(
        "econsult",
        models=("telecare.econsult.models",),
        routers=("telecare.econsult.api:router",),
        pages=("telecare.econsult.pages:router",),
        chart_sections=("telecare.econsult.pages:CHART_SECTIONS",),
        nav_items=("telecare.econsult.pages:NAV_ITEMS",),
        care_relationships=("telecare.econsult.service:queue_patients",),
        exporters=(("econsults", "telecare.econsult.service:export_econsults"),),
    ),
    Domain(
        "dermatology",
        models=("telecare.dermatology.models",),
        routers=("telecare.dermatology.api:router",),
        pages=("telecare.dermatology.pages:router",),
        chart_sections=("telecare.dermatology.pages:CHART_SECTIONS",),
        nav_items=("telecare.dermatology.pages:NAV_ITEMS",),
        care_relationships=("telecare.dermatology.service:queue_patients",),
        exporters=(("skin_cases", "telecare.dermatology.service:export_skin_cases"),),
    ),
    # Care-team tasks: other domains' actions raise them (PHQ-9 item 9, triage); the socket and the sweep
    # make sure someone acts.
    Domain(
        "caretasks",
        models=("telecare.caretasks.models",),
        routers=("telecare.caretasks.api:router",),
        pages=("telecare.caretasks.pages:router",),
        chart_sections=("telecare.caretasks.pages:CHART_SECTIONS",),
        nav_items=("telecare.caretasks.pages:NAV_ITEMS",),
        care_relationships=("telecare.caretasks.service:task_patients",),
        exporters=(("care_tasks", "telecare.caretasks.service:export_tasks"),),
        tasks=("telecare.caretasks.tasks:background_loop",),
    ),
    Domain(
        "questionnaires",
        models=("telecare.questionnaires.models",),
        routers=("telecare.questionnaires.api:router",),
        pages=("telecare.questionnaires.pages:router",),
        chart_sections=("telecare.questionnaires.pages:CHART_SECTIONS",),
        nav_items=("telecare.questionnaires.pages:NAV_ITEMS",),
        exporters=(("questionnaires", "telecare.questionnaires.service:export_questionnaires"),),
    ),
    Domain(
        "triage",
        models=("telecare.triage.models",),
        routers=("telecare.triage.api:router",),
        pages=("telecare.triage.pages:router",),
        chart_sections=("telecare.triage.pages:CHART_SECTIONS",),
        nav_items=("telecare.triage.pages:NAV_ITEMS",),
        exporters=(("triage", "telecare.triage.service:export_triage"),),
    ),
    Domain(
        "education",
        models=("telecare.education.models",),
        routers=("telecare.education.api:router",),
        pages=("telecare.education.pages:router",),
        chart_sections=("telecare.education.pages:CHART_SECTIONS",),
        nav_items=("telecare.education.pages:NAV_ITEMS",),
        exporters=(("education", "telecare.education.service:export_education"),),
    ),
    # FHIR is an adapter over the clinical domains; they never import it.
    Domain("fhir", routers=("telecare.fhir.api:router",)),
)


def resolve(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def import_all_models() -> None:
    """Import every domain's models so SQLAlchemy's metadata (and Alembic) sees every table."""
    for domain in DOMAINS:
        for name in domain.models:
            importlib.import_module(name)


_installed = False


def install() -> None:
    """Import the models and make every cross-domain registration the manifest lists (idempotent)."""
    global _installed
    import_all_models()
    if _installed:
        return
    from telecare.access.service import register_care_relationship
    from telecare.identity.service import register_exporter
    from telecare.web.chart import register_chart_section
    from telecare.web.templating import register_nav_item

    for domain in DOMAINS:
        for spec in domain.care_relationships:
            register_care_relationship(resolve(spec))
        for section, spec in domain.exporters:
            register_exporter(section, resolve(spec))
        for spec in domain.chart_sections:
            for chart_section in resolve(spec):
                register_chart_section(chart_section)
        for spec in domain.nav_items:
            for item in resolve(spec):
                register_nav_item(item)
    _installed = True


def routers() -> list[Any]:
    """Every APIRouter the app serves: API routers in manifest order, then page routers."""
    install()
    api = [resolve(spec) for domain in DOMAINS for spec in domain.routers]
    pages = [resolve(spec) for domain in DOMAINS for spec in domain.pages]
    return api + pages


def background_jobs() -> list[Any]:
    return [resolve(spec) for domain in DOMAINS for spec in domain.tasks]


def cli_groups() -> list[tuple[str, Any]]:
    return [(name, resolve(spec)) for domain in DOMAINS for name, spec in domain.cli]
