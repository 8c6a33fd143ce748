"""Shared request-parameter types.

Record ids are positive and fit PostgreSQL's INTEGER (32-bit) primary keys. Declaring the bound makes an
absurd id a 422 naming the parameter (and documents it in OpenAPI) instead of reaching the database
driver: SQLite's driver raises OverflowError on integers beyond 64 bits."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

MAX_ID = 2_147_483_647  # PostgreSQL INTEGER maximum

PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int, Query(ge=1, le=MAX_ID)]
BoundedId = Annotated[int, Field(ge=1, le=MAX_ID)]
"""For ids inside bodies and inside list-valued query parameters (`list[BoundedId]`)."""
