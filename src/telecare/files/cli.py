"""CLI for stored files: the orphan-blob sweep (docs/files.md#orphans)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.config import Settings

files_app = typer.Typer(help="Stored files (photos, documents).", no_args_is_help=True)


@files_app.command("sweep")
def sweep(
    older_than_hours: Annotated[
        float, typer.Option("--older-than-hours", help="Only blobs at least this old (uploads in flight)")
    ] = 1.0,
) -> None:
    """Delete blobs that no stored-file row names (left by a process killed before its commit, or by a
    failed commit). Reads the database, writes nothing to it."""
    from telecare.cli import run_in_uow
    from telecare.files import service

    async def go(session: AsyncSession, _settings: Settings) -> list[str]:
        return await service.sweep_orphan_blobs(session, older_than=timedelta(hours=older_than_hours))

    removed = run_in_uow(go)
    typer.echo(f"removed {len(removed)} orphan blob(s)")
