"""Interactive API documentation (Swagger UI) served from this server.

FastAPI's default /docs page loads Swagger UI from a CDN and starts it with an inline script; the content
security policy (core/middleware.py) refuses both. Here the files are vendored under static/vendor/swagger-ui
(Swagger UI 5, which reads the OpenAPI 3.1 FastAPI generates) and a small ES module starts the UI. In
production the page is off unless TELECARE_API_DOCS=true: the API description stays at /openapi.json."""

from __future__ import annotations

from html import escape

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from telecare.auth.dependencies import public


def mount_api_docs(app: FastAPI, *, enabled: bool) -> None:
    if not enabled:
        return
    title = escape(f"{app.title} {app.version}")

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(public)])
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="/static/favicon.svg">'
            '<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css"></head>'
            f'<body><div id="swagger-ui" data-openapi-url="{escape(app.openapi_url or "")}"></div>'
            '<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>'
            '<script type="module" src="/static/js/api-docs.js"></script></body></html>'
        )
