"""The stored-file refusals as the API renders them (RFC 9457 problem+json, core/errors.py): 413, 415 and
422 name the field; a damaged stored file is a 500 with its own stable code (docs/files.md#failure-modes)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, Request

from telecare.core.errors import install_error_handlers
from telecare.files.content import check_upload
from telecare.files.service import IMAGES_ONLY, StoredFileDamaged
from tests.files import images


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/api/v1/check")
    async def check(request: Request) -> dict[str, str]:
        body = await request.body()
        checked = check_upload(
            body, field="photo", accept=IMAGES_ONLY, max_bytes=50_000, max_pixels=10_000_000, max_edge=2048
        )
        return {"content_type": checked.content_type}

    @app.get("/api/v1/damaged")
    async def damaged() -> None:
        raise StoredFileDamaged()

    return app


async def test_refusals_are_problem_json_naming_the_field() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        ok = await client.post("/api/v1/check", content=images.jpeg())
        assert ok.json() == {"content_type": "image/jpeg"}
        cases = [
            (b"<html><script>alert(1)</script></html>", 415, "unsupported_file_type"),
            (images.minimal_pdf(), 415, "unsupported_file_type"),
            (b"\xff\xd8\xff\xe0 truncated", 422, "unreadable_file"),
            (images.png_claiming(50_000, 50_000), 422, "image_too_large"),
            (images.jpeg() + b"\x00" * 50_000, 413, "file_too_large"),
        ]
        for body, status, code in cases:
            r = await client.post("/api/v1/check", content=body)
            assert r.status_code == status, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert problem["code"] == code
            assert [e["field"] for e in problem["errors"]] == ["photo"]
        r = await client.get("/api/v1/damaged")
        assert r.status_code == 500
        assert r.json()["code"] == "file_integrity_failed"
