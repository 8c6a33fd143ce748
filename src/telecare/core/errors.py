"""One error model. Services raise AppError subclasses; `install_error_handlers` renders them as
RFC 9457 problem+json on the API, an OperationOutcome under /fhir/R4 and a friendly page in the web UI.
Messages carry ids and field names only, never health data or names."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class AppError(Exception):
    """Base of every expected error. `code` is stable and documented; `status_code` is the HTTP status."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(self.detail)


class ValidationFailed(AppError):
    """The request body or parameters do not meet the contract; `errors` names each field."""

    status_code = 422
    code = "validation_failed"
    title = "Validation failed"


class NotAuthenticated(AppError):
    """No valid session, token or device key."""

    status_code = 401
    code = "not_authenticated"
    title = "Authentication required"


class MfaRequired(AppError):
    """Staff session has not completed TOTP verification."""

    status_code = 401
    code = "mfa_required"
    title = "Two-factor verification required"


class Forbidden(AppError):
    """Authenticated but not allowed."""

    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(AppError):
    """The resource does not exist or the caller may not know it exists."""

    status_code = 404
    code = "not_found"
    title = "Not found"


class Conflict(AppError):
    """The request conflicts with the current state."""

    status_code = 409
    code = "conflict"
    title = "Conflict"


class TooManyRequests(AppError):
    """Rate limit hit; see Retry-After."""

    status_code = 429
    code = "rate_limited"
    title = "Too many requests"


class PayloadTooLarge(AppError):
    """The request body exceeds the configured limit."""

    status_code = 413
    code = "payload_too_large"
    title = "Payload too large"


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or "body"


def validation_errors(exc: RequestValidationError) -> list[FieldError]:
    # pydantic's messages are generic ("Field required"); its `input` is dropped: it may hold health data.
    return [FieldError(_field_name(e.get("loc", ())), str(e.get("msg", "invalid"))) for e in exc.errors()]


def _problem(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[FieldError],
    extra: dict[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"https://telecare.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = [{"field": e.field, "detail": e.message} for e in errors]
    body.update(extra)
    return body


def _operation_outcome(status: int, code: str, detail: str, errors: list[FieldError]) -> dict[str, Any]:
    fhir_code = {
        400: "invalid",
        401: "login",
        403: "forbidden",
        404: "not-found",
        409: "conflict",
        413: "too-costly",
        422: "invalid",
        429: "throttled",
    }.get(status, "exception")
    issues: list[dict[str, Any]] = [
        {
            "severity": "error",
            "code": fhir_code,
            "diagnostics": f"{e.field}: {e.message}",
            "expression": [e.field],
        }
        for e in errors
    ] or [{"severity": "error", "code": fhir_code, "diagnostics": detail, "details": {"text": code}}]
    return {"resourceType": "OperationOutcome", "issue": issues}


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/fhir/")):
        return False
    return "text/html" in request.headers.get("accept", "") or request.method in ("GET", "POST")


def render_error(
    request: Request,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    errors = errors or []
    path = request.url.path
    if path.startswith("/fhir/"):
        return JSONResponse(
            _operation_outcome(status, code, detail, errors),
            status_code=status,
            media_type=FHIR_JSON,
            headers=headers,
        )
    if not path.startswith(("/api/", "/ws/")) and wants_html(request):
        renderer = getattr(request.app.state, "error_page", None)
        if renderer is not None:
            response: Response = renderer(request, status, title, detail, errors)
            for key, value in (headers or {}).items():
                response.headers[key] = value
            return response
        return HTMLResponse(f"<h1>{title}</h1><p>{detail}</p>", status_code=status, headers=headers)
    return JSONResponse(
        _problem(request, status, code, title, detail, errors, extra or {}),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _unauthenticated_on_protected_route(request: Request) -> Response | None:
    """FastAPI parses and validates a body before it runs the route's dependencies, so a malformed request
    without any credentials would get 400/422 (telling an anonymous caller about the contract) instead of
    401. Authenticate first: when the matched route declares a non-public auth dependency and the request
    carries neither a bearer token nor a session cookie, answer 401."""
    # The auth domain tells which requests carry credentials (core knows no cookie names): see create_app.
    has_credentials = getattr(request.app.state, "has_credentials", None)
    if has_credentials is None or has_credentials(request):
        return None
    stack = [getattr(request.scope.get("route"), "dependant", None)]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        call = node.call
        if (
            call is not None
            and getattr(call, "__telecare_auth__", False)
            and not getattr(call, "__telecare_public__", False)
        ):
            exc = NotAuthenticated(headers={"WWW-Authenticate": "Bearer"})
            return render_error(
                request, exc.status_code, exc.code, exc.title, exc.detail, headers=exc.headers
            )
        stack.extend(node.dependencies)
    return None


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. `errors` names each offending field.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "detail"],
                "properties": {"field": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
}


FHIR_RESOURCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
}

OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "title": "OperationOutcome",
    "description": "FHIR R4 OperationOutcome: every error under /fhir/; `expression` names the field.",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


def _document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe the error bodies the API really sends: FastAPI documents 422 as its own HTTPValidationError
    shape, but every /api error is problem+json (schemathesis validates responses against this)."""
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    outcome = {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/fhir/"):
            schema["components"]["schemas"]["OperationOutcome"] = OPERATION_OUTCOME_SCHEMA
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, response in responses.items():
                    if status.startswith("2") and response.get("content"):
                        # The FHIR routes answer a generic resource (CapabilityStatement, Patient,
                        # Observation, Bundle) built as a dict; FastAPI cannot describe it, so the contract
                        # documented here is the one every FHIR resource shares.
                        response["content"] = {FHIR_JSON: {"schema": FHIR_RESOURCE_SCHEMA}}
                if "422" in responses:
                    responses["422"] = {
                        "description": "Invalid; each issue names its field.",
                        "content": outcome,
                    }
                responses.setdefault(
                    "default", {"description": "Error (OperationOutcome)", "content": outcome}
                )
            continue
        if not path.startswith("/api/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {
                    "description": "Validation failed; `errors` names each field.",
                    "content": problem,
                }
            responses.setdefault("default", {"description": "Error (problem+json)", "content": problem})
    components = schema["components"]["schemas"]
    text = str(schema["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in components and f"schemas/{unused}'" not in text:
            del components[unused]
    return schema


def install_error_handlers(app: FastAPI) -> None:
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return _document_problems(generate_openapi())

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        return render_error(
            request, exc.status_code, exc.code, exc.title, exc.detail, exc.errors, exc.headers, exc.extra
        )

    @app.exception_handler(OverflowError)
    async def _overflow(request: Request, exc: OverflowError) -> Response:
        # SQLite's driver cannot bind integers beyond 64 bits. Routes bound their ids (core/params.py); this
        # keeps any parameter a route forgot to bound a 4xx rather than a 500.
        log.warning("integer out of range on %s %s", request.method, request.url.path)
        return render_error(
            request,
            422,
            ValidationFailed.code,
            ValidationFailed.title,
            "A number in the request is out of range.",
            [FieldError("id", "out of range")],
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if (denied := _unauthenticated_on_protected_route(request)) is not None:
            return denied
        return render_error(
            request,
            422,
            ValidationFailed.code,
            ValidationFailed.title,
            "The request does not meet the contract; see errors.",
            validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and (denied := _unauthenticated_on_protected_route(request)) is not None:
            return denied  # an unparsable body from a caller without credentials
        code = {404: "not_found", 405: "method_not_allowed", 401: "not_authenticated"}.get(
            exc.status_code, "http_error"
        )
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return render_error(
            request,
            exc.status_code,
            code,
            title,
            str(exc.detail) if exc.status_code != 404 else "Not found",
            headers=dict(exc.headers or {}),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Log the type and route only: exception text may echo values.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.url.path, frames)
        return render_error(
            request,
            500,
            "internal_error",
            "Internal error",
            "An unexpected error occurred; it has been logged.",
        )
