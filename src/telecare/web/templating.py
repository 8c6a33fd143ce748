"""The one Jinja2 environment (autoescaping on), the role-based navigation and the `page` helper."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from telecare.access import rules
from telecare.access.policy import Action, Resource, allowed_reach
from telecare.auth.principal import Principal
from telecare.identity.models import Role

TEMPLATE_DIR = Path(__file__).parent / "templates"

templates = Jinja2Templates(directory=str(TEMPLATE_DIR))
_template_dirs: list[str] = [str(TEMPLATE_DIR)]


def add_template_dir(path: Path | str) -> None:
    """Let a domain keep its page and chart-section templates in its own folder."""
    if str(path) not in _template_dirs:
        _template_dirs.append(str(path))
        templates.env.loader = jinja2.FileSystemLoader(_template_dirs)


@dataclass(frozen=True)
class NavItem:
    href: str
    label: str
    resource: Resource
    action: Action
    roles: frozenset[Role] | None
    order: int


_nav_items: list[NavItem] = []


def register_nav_item(item: NavItem) -> None:
    """Add a main-navigation link (called by the domain manifest, `telecare.domains`); it shows only to roles
    the policy grants `item.action` on `item.resource` (optionally narrowed to `item.roles`)."""
    if any(existing.href == item.href for existing in _nav_items):
        return
    _nav_items.append(item)


def _domain_nav(principal: Principal) -> list[tuple[str, str]]:
    return [
        (item.href, item.label)
        for item in sorted(_nav_items, key=lambda i: (i.order, i.href))
        if (item.roles is None or principal.role in item.roles)
        and allowed_reach(principal.role, item.resource, item.action) is not None
    ]


def nav_for(principal: Principal | None) -> list[tuple[str, str]]:
    """(href, label) of the main navigation. Links follow the policy table, so a role never sees a link
    to a page that would refuse it."""
    if principal is None or (principal.role.is_staff and not principal.mfa_verified):
        return []
    if rules.is_patient(principal):
        return [("/home", "My health"), ("/me/contact", "My contact details"), *_domain_nav(principal)]
    # Roles that may search patients land on their patient list; the others on a page of links.
    if allowed_reach(principal.role, Resource.PATIENT, Action.SEARCH) is not None:
        label = "Patient contacts" if rules.is_coordinator(principal) else "My patients"
        items: list[tuple[str, str]] = [("/home", label)]
    else:
        items = [("/home", "Home")]
    if allowed_reach(principal.role, Resource.AGGREGATE, Action.READ) is not None:
        items.append(("/stats", "Statistics"))
    if allowed_reach(principal.role, Resource.USER, Action.SEARCH) is not None:
        items.append(("/admin/users", "Users"))
    if allowed_reach(principal.role, Resource.BREAK_GLASS, Action.SEARCH) is not None:
        items.append(("/admin/break-glass", "Emergency access review"))
    return items + _domain_nav(principal)


def idle_minutes(request: Request, principal: Principal | None) -> int | None:
    """The server-side idle timeout of this principal's session (drives the idle warning module)."""
    if principal is None or principal.kind != "session":
        return None
    settings = request.app.state.settings
    return int(settings.patient_idle_minutes if rules.is_patient(principal) else settings.staff_idle_minutes)


templates.env.globals["nav_for"] = nav_for
templates.env.globals["idle_minutes"] = idle_minutes


def page(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page; the signed-in principal (if any) is in the context as `principal`."""
    context.setdefault("principal", getattr(request.state, "principal", None))
    response: HTMLResponse = templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=headers
    )
    return response
