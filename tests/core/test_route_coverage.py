"""Deny by default (docs/security.md#goal-5): every route the app serves, including routes inside
included routers, mounts and WebSocket routes, declares an authentication dependency marked by
`auth_dependency` somewhere in its dependency tree. Routes that are public on purpose are listed here by
path and method; anything else without a marker fails, so routes added later by any domain are covered
without touching this file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount, Router

from telecare.auth.dependencies import Authenticated, CurrentPrincipal, public
from telecare.config import Mode, Settings

# (method, path) pairs served without authentication, on purpose. "*" covers every method of a mount.
PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),  # revokes only the session named by the caller's own cookie, CSRF-checked
    ("*", "/static"),  # stylesheets and ES modules
    # FastAPI's generated API description: the schema holds no data, the project is open source.
    ("GET", "/openapi.json"),
    ("GET", "/docs"),  # Swagger UI page (web/api_docs.py), its files under /static/vendor/swagger-ui
    # Guest (interpreter, caregiver) invitation landing: the one-time token in the path is the credential,
    # checked, consumed and audited by visits.live.invitations.
    ("GET", "/join/{token}"),
    ("POST", "/join/{token}"),
    # FHIR CapabilityStatement: the FHIR RESTful API spec (http.html#capabilities) requires servers to answer
    # `GET [base]/metadata` without authentication so clients can discover the security scheme; it describes
    # the server and holds no patient data.
    ("GET", "/fhir/R4/metadata"),
}


@dataclass(frozen=True)
class RouteInfo:
    kind: str  # http | websocket | mount | starlette
    path: str
    methods: tuple[str, ...]
    markers: tuple[str, ...]  # names of auth_dependency-marked callables found in the dependency tree

    @property
    def is_public(self) -> bool:
        return "public" in self.markers


def _markers(dependant: Dependant | None) -> tuple[str, ...]:
    found: list[str] = []
    stack = [dependant] if dependant is not None else []
    while stack:
        node = stack.pop()
        call = node.call
        if call is not None and getattr(call, "__telecare_auth__", False):
            found.append(getattr(call, "__name__", repr(call)))
        stack.extend(node.dependencies)
    return tuple(sorted(found))


def iter_routes(routes: Any, prefix: str = "") -> Iterator[RouteInfo]:
    """Every served route with the auth markers in its dependency tree, following included routers and
    mounted sub-applications."""
    for ctx in iter_route_contexts(list(routes)):
        original = ctx.original_route
        if isinstance(original, Mount):
            inner = original.app
            sub_routes = getattr(inner, "routes", None)
            if isinstance(inner, FastAPI | Router) or sub_routes:
                yield from iter_routes(sub_routes or [], prefix + original.path)
            else:
                yield RouteInfo("mount", prefix + original.path, ("*",), ())
            continue
        dependant = getattr(ctx, "dependant", None)
        path = prefix + (ctx.path or "")
        methods = tuple(sorted(ctx.methods or ()))
        if dependant is None:
            yield RouteInfo("starlette", path, methods or ("WS",), ())
        elif not methods:
            yield RouteInfo("websocket", path, ("WS",), _markers(dependant))
        else:
            yield RouteInfo("http", path, methods, _markers(dependant))


def offending(routes: Any, public_routes: set[tuple[str, str]]) -> list[str]:
    """Routes without an auth declaration, and routes declared public that are not on the list."""
    problems = []
    for info in iter_routes(routes):
        methods = [m for m in info.methods if m != "HEAD"] or list(info.methods)
        listed = all((m, info.path) in public_routes or ("*", info.path) in public_routes for m in methods)
        if not info.markers and not listed:
            problems.append(f"{','.join(methods)} {info.path}: no auth dependency")
        elif info.is_public and not listed:
            problems.append(f"{','.join(methods)} {info.path}: public but not listed as public")
    return problems


@pytest.fixture(scope="module")
def telecare_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    from telecare.app import create_app

    path = tmp_path_factory.mktemp("routes") / "unused.db"
    return create_app(
        Settings(mode=Mode.TEST, database_url=f"sqlite:///{path}", _env_file=None)  # type: ignore[call-arg]
    )


def test_every_route_declares_an_auth_dependency(telecare_app: FastAPI) -> None:
    assert offending(telecare_app.routes, PUBLIC_ROUTES) == []


def test_public_list_names_only_served_routes(telecare_app: FastAPI) -> None:
    """A stale entry would silently make a future route with that path public."""
    served = set()
    for info in iter_routes(telecare_app.routes):
        served.update((m, info.path) for m in info.methods)
        served.add(("*", info.path))
    assert sorted(PUBLIC_ROUTES - served) == []


def test_enumeration_sees_every_api_route(telecare_app: FastAPI) -> None:
    """The walker reaches routes inside included routers (guards against a FastAPI change hiding them)."""
    paths = {info.path for info in iter_routes(telecare_app.routes)}
    schema_paths = set(telecare_app.openapi()["paths"])
    assert schema_paths <= paths
    assert {"/api/v1/patients/{patient_id}", "/patients/{patient_id}", "/login/totp"} <= paths


def test_checker_flags_unannotated_http_websocket_and_mount_routes(tmp_path: Path) -> None:
    """The check can fail: a bare route, a bare websocket, a bare mounted app and a public route missing
    from the list are each reported; declared routes are not."""
    app = FastAPI()
    router = APIRouter(prefix="/api/v9")

    @router.get("/bare")
    async def bare() -> dict[str, str]:
        return {}

    @router.get("/declared")
    async def declared(principal: CurrentPrincipal) -> dict[str, str]:
        return {}

    @router.get("/router-level", dependencies=[Authenticated()])
    async def router_level() -> dict[str, str]:
        return {}

    @router.get("/sneaky-public", dependencies=[Depends(public)])
    async def sneaky() -> dict[str, str]:
        return {}

    @router.websocket("/ws/bare")
    async def ws_bare(websocket: WebSocket) -> None:
        await websocket.close()

    @router.websocket("/ws/declared")
    async def ws_declared(websocket: WebSocket, principal: CurrentPrincipal) -> None:
        await websocket.close()

    app.include_router(router)
    sub = FastAPI()

    @sub.get("/inner")
    async def inner() -> dict[str, str]:
        return {}

    app.mount("/sub", sub)
    from starlette.staticfiles import StaticFiles

    app.mount("/files", StaticFiles(directory=tmp_path))
    problems = offending(
        app.routes,
        {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")} | {("GET", "/docs/oauth2-redirect")},
    )
    assert sorted(problems) == sorted(
        [
            "GET /api/v9/bare: no auth dependency",
            "GET /api/v9/sneaky-public: public but not listed as public",
            "GET /sub/inner: no auth dependency",
            "GET /sub/openapi.json: no auth dependency",
            "GET /sub/docs: no auth dependency",
            "GET /sub/docs/oauth2-redirect: no auth dependency",
            "GET /sub/redoc: no auth dependency",
            "WS /api/v9/ws/bare: no auth dependency",
            "* /files: no auth dependency",
        ]
    )
