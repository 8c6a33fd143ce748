"""create_app(): routers, middleware, handlers. No logic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from telecare import __version__, domains
from telecare.auth.dependencies import has_credentials, public
from telecare.config import Settings, get_settings
from telecare.core.db import Database
from telecare.core.errors import install_error_handlers
from telecare.core.events import EventBus
from telecare.core.logs import configure_logging
from telecare.core.middleware import BodyLimit, SecurityHeaders


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    domains.install()
    db = Database(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await app.state.events.start()
        jobs = [asyncio.create_task(job(app)) for job in domains.background_jobs()]
        try:
            yield
        finally:
            for task in jobs:
                task.cancel()
            for task in jobs:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await app.state.events.stop()
            await db.dispose()

    app = FastAPI(
        title="Telecare API",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's own /docs loads Swagger UI from a CDN, which the CSP refuses: web/api_docs.py serves
        # it from this server instead (off in production unless TELECARE_API_DOCS says otherwise).
        docs_url=None,
        redoc_url=None,
        description="Virtual care: visits, patient portal, remote monitoring. Errors are RFC 9457 "
        "problem+json; FHIR errors are OperationOutcome.",
    )
    app.state.settings = settings
    app.state.db = db
    db.events = EventBus(db)
    db.group_commit = True  # a long-running server coalesces concurrent device uploads (monitoring)
    db.seal_in_background = True  # ...and seals audit entries off the request's path (audit/sealer.py)
    app.state.events = db.events
    app.state.has_credentials = has_credentials
    install_error_handlers(app)

    from telecare.web import mount_web
    from telecare.web.api_docs import mount_api_docs

    mount_api_docs(app, enabled=settings.docs_enabled)
    mount_web(app)
    for router in domains.routers():
        app.include_router(router)

    @app.get("/healthz", dependencies=[_public()], tags=["meta"])
    async def healthz() -> dict[str, Any]:
        """Liveness probe."""
        return {"status": "ok", "version": __version__}

    # Middleware runs outermost-last-added: the security headers wrap everything, the 413 of the body
    # limit and the 400 of the host check included.
    ingest_paths = ("/api/v1/monitoring/readings", "/fhir/R4", "/api/v1/entries")
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        overrides={
            **dict.fromkeys(ingest_paths, settings.rpm_max_body_bytes),
            # A message with its five attachments (messaging.service.MAX_ATTACHMENTS), each checked again.
            **dict.fromkeys(
                ("/api/v1/messaging/threads", "/messages"),
                5 * settings.max_upload_bytes + settings.max_body_bytes,
            ),
        },
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts())
    app.add_middleware(SecurityHeaders, hsts=settings.cookie_secure)
    return app


def _public() -> Any:
    from fastapi import Depends

    return Depends(public)
