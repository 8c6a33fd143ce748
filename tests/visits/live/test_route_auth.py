"""Every route, WebSocket routes included, declares how its caller is authenticated."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Mount

from telecare.app import create_app
from telecare.config import Mode, Settings


def _declares_auth(dependant: Any) -> bool:
    for dep in dependant.dependencies:
        if getattr(dep.call, "__telecare_auth__", False) or _declares_auth(dep):
            return True
    return False


def _routes(routes: list[Any], inherited: bool = False) -> list[tuple[Any, bool]]:
    """Leaf routes with whether an enclosing router declares auth (FastAPI nests included routers)."""
    out: list[tuple[Any, bool]] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            declared = inherited or any(
                getattr(d.dependency, "__telecare_auth__", False) for d in inner.dependencies
            )
            out.extend(_routes(inner.routes, declared))
        else:
            out.append((route, inherited))
    return out


def test_every_http_and_websocket_route_declares_an_auth_dependency(tmp_path: Any) -> None:
    app = create_app(
        Settings(mode=Mode.TEST, database_url=f"sqlite:///{tmp_path / 'x.db'}", _env_file=None)  # type: ignore[call-arg]
    )
    sockets = []
    missing = []
    checked = 0
    for route, inherited in _routes(list(app.routes)):
        if isinstance(route, Mount) or not isinstance(route, APIRoute | APIWebSocketRoute):
            continue
        checked += 1
        if inherited:
            continue
        if route.path.startswith(("/docs", "/redoc", "/openapi")):
            continue  # FastAPI's own documentation routes
        if isinstance(route, APIWebSocketRoute):
            sockets.append(route.path)
        if not _declares_auth(route.dependant):
            missing.append(route.path)
    assert checked > 50
    assert missing == []
    assert sorted(sockets) == [
        "/ws/visits/queue",
        "/ws/visits/{appointment_id}/signal",
        "/ws/visits/{appointment_id}/status",
    ]
