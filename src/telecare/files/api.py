"""Download of a stored file (thin: one action in files.service, which authorises and audits the read).

Photos are served inline (the thread page shows them); PDFs as attachments, so that a browser's PDF viewer
does not run a document from a patient under our origin. Never cached by shared caches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.files import service
from telecare.files.models import FileKind

router = APIRouter(prefix="/api/v1/files", tags=["files"])
FileId = Annotated[str, Path(min_length=32, max_length=32, pattern="^[0-9a-f]{32}$")]


@router.get(
    "/{file_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "application/pdf": {}}}},
)
async def download(file_id: FileId, session: DbSession, principal: CurrentPrincipal) -> Response:
    """The file's bytes (re-encoded photo without metadata, or the PDF), for a caller who may open the
    patient's files. 404 for a file that does not exist or is out of reach."""
    opened = await service.open_file(session, principal, file_id=file_id)
    f = opened.file
    disposition = "inline" if f.kind == FileKind.IMAGE else "attachment"
    ascii_name = "".join(c if c.isalnum() or c in "._- " else "_" for c in f.display_name)[:120] or "file"
    return Response(
        opened.data,
        media_type=f.content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{ascii_name}"',
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
