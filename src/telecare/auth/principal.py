"""The authenticated caller, resolved once per request, socket or CLI command."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from telecare.audit.models import Purpose
from telecare.audit.service import Actor
from telecare.identity.models import Role


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, resolved once per request."""

    user_id: int
    org_id: int
    role: Role
    kind: str  # "session" | "token" | "system"
    client_addr: str | None = None
    scopes: frozenset[str] | None = None  # None: a web session (role policy only)
    session_id: int | None = None
    mfa_verified: bool = False
    patient_id: int | None = None  # for role patient: their own record
    practitioner_id: int | None = None  # for clinical roles
    email: str = ""
    display_name: str = ""
    csrf_token: str | None = None
    purpose: Purpose = Purpose.TREATMENT
    extra: dict[str, Any] = field(default_factory=dict)

    def actor(self) -> Actor:
        if self.kind == "system":
            return Actor(None, self.org_id or None, "system", "system", None)
        return Actor(self.user_id, self.org_id, str(self.role), self.kind, self.client_addr)

    def has_scope(self, resource: str, letter: str) -> bool:
        """SMART v2-style scopes: `user/Patient.rs`, `user/*.cruds`, `patient/Observation.r`."""
        if self.scopes is None:
            return True
        for scope in self.scopes:
            _, _, body = scope.partition("/")
            res, _, letters = body.partition(".")
            # Only plain permission letters count. A granular scope (`Observation.rs?category=...`) narrows
            # access in SMART v2; not being enforced here, it grants nothing, rather than its query string's
            # letters ("category" holds a c) granting create.
            if res in ("*", resource) and letter in letters and set(letters) <= set("cruds"):
                return True
        return False


def system_principal(org_id: int = 0, *, name: str = "cli") -> Principal:
    """The operator acting through the `telecare` command or a scheduled task, within one organization (0:
    before any exists, e.g. creating one). Authorised by `access.rules.is_system`, audited as "system"."""
    return Principal(
        user_id=0,
        org_id=org_id,
        role=Role.ADMIN,
        kind="system",
        mfa_verified=True,
        email=name,
        display_name=f"system ({name})",
        purpose=Purpose.OPERATIONS,
    )
