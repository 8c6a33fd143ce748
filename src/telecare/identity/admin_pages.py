"""Administration pages: users (list, create, disable and enable) and the emergency-access review list.

Admins manage accounts, never clinical content: nothing here reads patient records."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from telecare.access import flows, rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.core.errors import Forbidden
from telecare.core.time import utc_now
from telecare.identity import service
from telecare.identity.models import Role
from telecare.identity.schemas import UserCreate
from telecare.web.forms import field_errors
from telecare.web.templating import page

router = APIRouter(prefix="/admin", include_in_schema=False)

ROLE_LABELS = {
    Role.PATIENT: "Patient",
    Role.PHYSICIAN: "Physician",
    Role.NURSE: "Nurse",
    Role.THERAPIST: "Therapist",
    Role.PHARMACIST: "Pharmacist",
    Role.COORDINATOR: "Care coordinator",
    Role.INFORMATICS: "Informatics",
    Role.ADMIN: "Administrator",
}


def _grantable(principal: Principal) -> dict[str, str]:
    """The roles this caller may create accounts for (access.rules.may_grant_role)."""
    return {str(r): label for r, label in ROLE_LABELS.items() if rules.may_grant_role(principal, r)}


@router.get("/users", response_class=HTMLResponse)
async def users(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Every user of the organization with their status."""
    access.reach_for(principal, Resource.USER, Action.SEARCH)
    return page(
        request,
        "admin/users.html",
        users=await service.list_users(session, principal),
        roles=ROLE_LABELS,
        changed=request.query_params.get("changed"),
    )


@router.post("/users/{user_id}/disable", response_class=HTMLResponse)
async def disable(
    request: Request, user_id: int, session: DbSession, principal: CurrentPrincipal
) -> Response:
    """Disable a user: every session and API token of theirs stops working at once."""
    await service.set_active(session, principal, user_id=user_id, active=False)
    return RedirectResponse(f"/admin/users?changed={user_id}", status_code=303)


@router.post("/users/{user_id}/enable", response_class=HTMLResponse)
async def enable(request: Request, user_id: int, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Re-enable a user (they sign in again; old sessions stay revoked)."""
    await service.set_active(session, principal, user_id=user_id, active=True)
    return RedirectResponse(f"/admin/users?changed={user_id}", status_code=303)


@router.get("/users/new", response_class=HTMLResponse)
async def new_user_form(request: Request, principal: CurrentPrincipal) -> Response:
    """Form to create a user."""
    access.reach_for(principal, Resource.USER, Action.CREATE)
    return page(request, "admin/user_new.html", grantable=_grantable(principal), values={}, errors={})


@router.post("/users", response_class=HTMLResponse)
async def create_user(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    email: Annotated[str, Form(max_length=320)] = "",
    display_name: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Create a user with an initial password; staff enrol TOTP at their first sign-in."""
    values = {"email": email.strip(), "display_name": display_name.strip(), "role": role}
    errors: dict[str, str] = {}

    def again(status: int) -> Response:
        return page(
            request,
            "admin/user_new.html",
            status_code=status,
            grantable=_grantable(principal),
            values=values,
            errors=errors,
        )

    access.reach_for(principal, Resource.USER, Action.CREATE)
    try:
        data = UserCreate.model_validate({**values, "password": password})
    except ValidationError as exc:
        errors = field_errors(exc)
        return again(422)
    try:
        user = await service.create_user(
            session,
            principal,
            email=data.email,
            role=data.role,
            display_name=data.display_name,
            password=data.password,
        )
    except service.EmailTaken:
        errors["email"] = "A user with this email already exists."
        return again(409)
    except Forbidden as exc:
        if not exc.errors:
            raise
        errors["role"] = "This role has access beyond your own; the operator creates it."
        return again(403)
    return RedirectResponse(f"/admin/users?changed={user.id}", status_code=303)


@router.get("/break-glass", response_class=HTMLResponse)
async def emergency_accesses(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Emergency (break-the-glass) accesses for privacy review, newest first."""
    rows = await flows.list_emergency_accesses(session, principal)
    return page(request, "admin/break_glass.html", rows=rows, now=utc_now())
