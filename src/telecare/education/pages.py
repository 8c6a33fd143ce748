"""Server-rendered pages of the domain. Thin: each handler calls the service."""

from __future__ import annotations

from fastapi import APIRouter

from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem

router = APIRouter(include_in_schema=False)
NAV_ITEMS: tuple[NavItem, ...] = ()
CHART_SECTIONS: tuple[ChartSection, ...] = ()
