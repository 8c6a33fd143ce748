"""The licensure gate, as a pure function (docs/licensure.md#the-rule).

The practice of medicine (and nursing, and psychology) happens where the patient is at the time of the
encounter, so the practitioner needs authority in the patient's *current* state, active on the visit date:
- a state licence issued by that state (own-state, or issued through IMLC: IMLC licences are full state
  licences, so they are checked exactly like any other licence);
- an NLC multistate licence: issued by the nurse's primary state of residence (a member that issues
  multistate licences) and valid in every NLC member state;
- PSYPACT APIT: the psychologist practises from their declared home state (a member) into another
  member state.
Compact member lists are data (`compact_members.py`) with an as-of date."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date


class Basis(enum.StrEnum):
    STATE_LICENCE = "state_licence"
    IMLC_LICENCE = "imlc_licence"
    NLC_PRIVILEGE = "nlc_privilege"
    PSYPACT_APIT = "psypact_apit"


@dataclass(frozen=True)
class MemberState:
    state: str
    effective_from: date | None = None
    issues_multistate: bool = True  # can be a primary (home) state for the compact's multistate credential


@dataclass(frozen=True)
class CompactMembership:
    compact: str  # "nlc" | "psypact", as identity.models.Compact
    as_of: date
    sources: tuple[str, ...]
    members: tuple[MemberState, ...]

    def member_on(self, state: str, on: date) -> MemberState | None:
        for m in self.members:
            if m.state == state and (m.effective_from is None or m.effective_from <= on):
                return m
        return None


@dataclass(frozen=True)
class LicenceFact:
    state: str
    license_type: str
    source: str  # "state" | "imlc"
    issued_on: date
    expires_on: date


@dataclass(frozen=True)
class PrivilegeFact:
    compact: str  # "nlc" | "psypact"
    home_state: str
    issued_on: date
    expires_on: date


@dataclass(frozen=True)
class Authority:
    basis: Basis
    state: str
    expires_on: date
    via_state: str  # the state whose licence or compact home state grants it


@dataclass(frozen=True)
class GateResult:
    state: str
    on: date
    authority: Authority | None
    reasons: tuple[str, ...] = field(default_factory=tuple)  # why not, when authority is None

    @property
    def allowed(self) -> bool:
        return self.authority is not None


def _active(issued_on: date, expires_on: date, on: date) -> bool:
    return issued_on <= on <= expires_on


def authority_in(
    state: str,
    on: date,
    licences: Iterable[LicenceFact],
    privileges: Iterable[PrivilegeFact],
    compacts: Mapping[str, CompactMembership],
    *,
    practitioner_location: str | None = None,
) -> GateResult:
    """May a practitioner with these credentials serve a patient located in `state` on `on`?

    `practitioner_location`: where the practitioner is; PSYPACT requires them to be in their home state
    (docs/licensure.md#compacts). None means not known yet: assume the declared home state."""
    state = state.upper()
    reasons: list[str] = []
    candidates: list[Authority] = []
    for lic in licences:
        if lic.state.upper() != state:
            continue
        if _active(lic.issued_on, lic.expires_on, on):
            basis = Basis.IMLC_LICENCE if lic.source == "imlc" else Basis.STATE_LICENCE
            candidates.append(Authority(basis, state, lic.expires_on, state))
        elif on < lic.issued_on:
            reasons.append(f"The {state} licence starts on {lic.issued_on.isoformat()}.")
        else:
            reasons.append(f"The {state} licence expired on {lic.expires_on.isoformat()}.")
    for priv in privileges:
        membership = compacts.get(priv.compact)
        label = priv.compact.upper()
        if membership is None:
            continue
        if not _active(priv.issued_on, priv.expires_on, on):
            reasons.append(f"The {label} privilege is not active on {on.isoformat()}.")
            continue
        home = membership.member_on(priv.home_state.upper(), on)
        if home is None or not home.issues_multistate:
            reasons.append(f"The {label} home state {priv.home_state} does not issue {label} authority.")
            continue
        if membership.member_on(state, on) is None:
            reasons.append(
                f"{state} is not a {label} member state (list as of {membership.as_of.isoformat()})."
            )
            continue
        if priv.compact == "psypact":
            where = (practitioner_location or priv.home_state).upper()
            if where != priv.home_state.upper():
                reasons.append(f"PSYPACT requires practising from the home state {priv.home_state}.")
                continue
            candidates.append(Authority(Basis.PSYPACT_APIT, state, priv.expires_on, priv.home_state))
        else:
            candidates.append(Authority(Basis.NLC_PRIVILEGE, state, priv.expires_on, priv.home_state))
    if candidates:
        # Prefer the authority that lasts longest (the coverage view shows when it lapses).
        best = max(candidates, key=lambda a: a.expires_on)
        return GateResult(state, on, best)
    if not reasons:
        reasons.append(f"No licence or compact privilege covers {state}.")
    return GateResult(state, on, None, tuple(reasons))


def serviceable_states(
    on: date,
    licences: Iterable[LicenceFact],
    privileges: Iterable[PrivilegeFact],
    compacts: Mapping[str, CompactMembership],
) -> dict[str, Authority]:
    """Every state the practitioner may serve on `on`, with the authority used (coverage view)."""
    licences = list(licences)
    privileges = list(privileges)
    states = {lic.state.upper() for lic in licences}
    for priv in privileges:
        membership = compacts.get(priv.compact)
        if membership is not None:
            states.update(m.state for m in membership.members)
    out: dict[str, Authority] = {}
    for state in sorted(states):
        result = authority_in(state, on, licences, privileges, compacts)
        if result.authority is not None:
            out[state] = result.authority
    return out
