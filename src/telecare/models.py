"""The list of domains: their models (so SQLAlchemy metadata and Alembic see every table) and their routers.

A new domain adds one line to each list."""

from __future__ import annotations

import importlib
from typing import Any

DOMAIN_MODELS = [
    "telecare.identity.models",
    "telecare.audit.models",
    "telecare.access.models",
    "telecare.notifications.models",
    "telecare.scheduling.models",
    "telecare.visits.models",
    "telecare.billing.models",
    "telecare.monitoring.models",
]

# "module:attribute" of each APIRouter, included in this order.
DOMAIN_ROUTERS = [
    "telecare.identity.api:router",
    "telecare.access.api:router",
    "telecare.audit.api:router",
    "telecare.scheduling.api:router",
    "telecare.visits.api:router",
    "telecare.billing.api:router",
    "telecare.web.visit_pages:router",
    "telecare.visits.live.api:router",
    "telecare.web.live_pages:router",
    "telecare.monitoring.api:router",
    "telecare.monitoring.nightscout:router",
    "telecare.fhir.api:router",
    "telecare.web.monitoring:router",
]

# "module:attribute" of async background loops `fn(app)` started in the app lifespan (clock-driven jobs).
DOMAIN_BACKGROUND = [
    "telecare.monitoring.tasks:background_loop",
]


def import_all_models() -> None:
    for name in DOMAIN_MODELS:
        importlib.import_module(name)


def background_jobs() -> list[Any]:
    out = []
    for spec in DOMAIN_BACKGROUND:
        module, _, attr = spec.partition(":")
        out.append(getattr(importlib.import_module(module), attr))
    return out


def routers() -> list[Any]:
    out = []
    for spec in DOMAIN_ROUTERS:
        module, _, attr = spec.partition(":")
        out.append(getattr(importlib.import_module(module), attr))
    return out
