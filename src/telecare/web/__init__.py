"""Server-rendered pages (Jinja2) and static assets, all served by the app itself (no CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from telecare.core.errors import FieldError
from telecare.web.templating import page

STATIC_DIR = Path(__file__).parent / "static"


def mount_web(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def error_page(
        request: Request, status: int, title: str, detail: str, errors: list[FieldError]
    ) -> HTMLResponse:
        if status == 401:
            from fastapi.responses import RedirectResponse

            target = "/login/totp" if title.startswith("Two-factor") else "/login"
            return RedirectResponse(target, status_code=303)  # type: ignore[return-value]
        return page(
            request,
            "error.html",
            status_code=status,
            status=status,
            title=title,
            detail=detail,
            errors=errors,
        )

    app.state.error_page = error_page
