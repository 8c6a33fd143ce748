"""REST API of the domain. Thin: each handler calls the service."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
