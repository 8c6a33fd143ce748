"""Monitoring pages: nurse worklist, patient monitoring page, billing worklist, patient portal readings."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
