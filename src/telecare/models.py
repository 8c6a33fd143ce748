"""Imports every domain's models so SQLAlchemy metadata (and Alembic) sees all tables."""

from __future__ import annotations

import importlib

DOMAIN_MODELS = [
    "telecare.identity.models",
    "telecare.audit.models",
    "telecare.access.models",
    "telecare.notifications.models",
]


def import_all_models() -> None:
    for name in DOMAIN_MODELS:
        importlib.import_module(name)
