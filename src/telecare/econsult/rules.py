"""Interprofessional e-consult rules (pure: no database, no I/O, no clock; every "now" is a parameter).

- The codes a consult supports, for the consultant (99446-99449, 99451) and for the requester (99452),
  with every reason that rules one out (docs/econsult.md#codes-and-time-bands).
- Turnaround and the due date of an answer (docs/econsult.md#due-dates).
This only proposes codes; the clinicians confirm them (docs/econsult.md#proposed-then-confirmed)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from telecare.messaging.rules import BillingClass, OrgCalendar, due_at

__all__ = [
    "CONSULTANT_LOOKBACK",
    "CPT_ECONSULT_REQUESTER",
    "CPT_ECONSULT_VERBAL_5_10",
    "CPT_ECONSULT_VERBAL_11_20",
    "CPT_ECONSULT_VERBAL_21_30",
    "CPT_ECONSULT_VERBAL_31_PLUS",
    "CPT_ECONSULT_WRITTEN_5",
    "FREQUENCY",
    "REQUESTER_MINIMUM",
    "URGENT_TURNAROUND",
    "VERBAL_BANDS",
    "VISIT_AFTER_WINDOW",
    "WRITTEN_MINIMUM",
    "BillingClass",
    "CodeProposal",
    "ConsultFacts",
    "ConsultTime",
    "EconsultProposal",
    "Side",
    "due_by",
    "propose_econsult_codes",
    "turnaround",
]

# ---------------------------------------------------------------------------------------------------------
# Codes (docs/econsult.md#codes-and-time-bands)
# ---------------------------------------------------------------------------------------------------------

# Consultant, verbal and written: telephone/Internet/EHR assessment and management with a verbal discussion
# and a written report to the requester; cumulative consultant time.
CPT_ECONSULT_VERBAL_5_10 = "99446"  # Interprofessional telephone/Internet/EHR consultation, 5-10 minutes
CPT_ECONSULT_VERBAL_11_20 = "99447"  # Interprofessional telephone/Internet/EHR consultation, 11-20 minutes
CPT_ECONSULT_VERBAL_21_30 = "99448"  # Interprofessional telephone/Internet/EHR consultation, 21-30 minutes
CPT_ECONSULT_VERBAL_31_PLUS = "99449"  # Interprofessional telephone/Internet/EHR consultation, 31+ minutes
# Consultant, written report only.
CPT_ECONSULT_WRITTEN_5 = "99451"  # Interprofessional consultation with written report, 5 minutes or more
# Requester (treating/requesting practitioner).
CPT_ECONSULT_REQUESTER = "99452"  # Interprofessional referral service by the treating practitioner, 30 min

# (lowest minutes, code), highest first; under 5 minutes no code.
VERBAL_BANDS: tuple[tuple[int, str], ...] = (
    (31, CPT_ECONSULT_VERBAL_31_PLUS),
    (21, CPT_ECONSULT_VERBAL_21_30),
    (11, CPT_ECONSULT_VERBAL_11_20),
    (5, CPT_ECONSULT_VERBAL_5_10),
)
WRITTEN_MINIMUM = 5  # 99451: "5 minutes or more of medical consultative time"
# 99452's descriptor says 30 minutes; one source applies the CPT mid-point rule (more than half, so 16).
# Confirm with the MAC: docs/econsult.md#requester-code
REQUESTER_MINIMUM = 16

# docs/econsult.md#frequency-and-look-back-rules: both look-backs include their last day (exactly 14 or 7
# days before still blocks), which withholds the code in the doubtful case.
CONSULTANT_LOOKBACK = timedelta(days=14)  # consultant saw the patient in the 14 days before the request
VISIT_AFTER_WINDOW = timedelta(days=14)  # the answer leads to a visit with the consultant within 14 days
FREQUENCY = timedelta(days=7)  # at most one code per 7 days, per patient and side

# docs/econsult.md#due-dates: the product's default for an urgent consult, not a regulation.
URGENT_TURNAROUND = timedelta(hours=24)


class Side(enum.StrEnum):
    REQUESTER = "requester"  # the treating/requesting practitioner
    CONSULTANT = "consultant"  # the specialist who answers


@dataclass(frozen=True)
class ConsultTime:
    at: datetime  # when the work was done
    minutes: int
    side: Side
    billing_class: BillingClass  # telecare.messaging.rules.billing_class_for; only PHYSICIAN_QHP counts
    verbal: bool = False  # time in the verbal (telephone/video) discussion between the two clinicians


@dataclass(frozen=True)
class ConsultFacts:
    requested_at: datetime
    answered_at: datetime | None  # the consultant's answer (written report) was sent; None while open
    verbal_discussion: bool  # the consultant and the requester spoke: 99446-99449 rather than 99451
    written_report: bool  # a written report went back to the requester
    consent_recorded_at: datetime | None  # the patient's verbal consent; None if not recorded
    entries: tuple[ConsultTime, ...]
    consultant_saw_patient_at: tuple[datetime, ...]  # face-to-face or telehealth visits with the consultant
    visits_after_answer_with_consultant: tuple[datetime, ...]  # visits the answer led to
    prior_consultant_codes_at: tuple[datetime, ...]  # other e-consult codes, this patient and consultant
    prior_requester_codes_at: tuple[datetime, ...]  # other 99452 codes for this patient
    now: datetime


@dataclass(frozen=True)
class CodeProposal:
    code: str | None
    minutes: int  # counted minutes of this side
    reasons: tuple[str, ...]
    final: bool


@dataclass(frozen=True)
class EconsultProposal:
    consultant: CodeProposal
    requester: CodeProposal


def _utc(name: str, value: datetime) -> datetime:
    """`value` in UTC (arithmetic on datetimes sharing one tzinfo is by wall time, wrong across DST)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def _band(minutes: int, bands: Iterable[tuple[int, str]]) -> str | None:
    for lowest, code in bands:
        if minutes >= lowest:
            return code
    return None


@dataclass
class _Tally:
    counted: int = 0
    verbal: int = 0
    outside: int = 0
    nonphysician: int = 0
    staff: int = 0

    def notes(self, outside_what: str) -> list[str]:
        notes = []
        if self.outside:
            notes.append(f"{self.outside} min {outside_what} not counted.")
        if self.nonphysician:
            notes.append(
                f"{self.nonphysician} min of non-physician HCP time not counted: these codes are for "
                "physicians and QHPs who report E/M."
            )
        if self.staff:
            notes.append(f"{self.staff} min of clinical-staff time not counted.")
        return notes


def _tally(
    entries: Iterable[tuple[datetime, ConsultTime]], inside: tuple[datetime | None, datetime | None]
) -> _Tally:
    lo, hi = inside
    tally = _Tally()
    for at, entry in entries:
        if (lo is not None and at < lo) or (hi is not None and at > hi):
            tally.outside += entry.minutes
        elif entry.billing_class is BillingClass.STAFF:
            tally.staff += entry.minutes
        elif entry.billing_class is BillingClass.NONPHYSICIAN_QHP:
            tally.nonphysician += entry.minutes
        else:
            tally.counted += entry.minutes
            if entry.verbal:
                tally.verbal += entry.minutes
    return tally


def _frequency(prior: Iterable[datetime], service: datetime, who: str) -> list[str]:
    return [
        f"Another e-consult code {who} on {_day(at)}, within 7 days of this one ({_day(service)}): at "
        "most one per 7 days."
        for at in prior
        if abs(at - service) <= FREQUENCY
    ]


def _consultant_code(facts: ConsultFacts, tally: _Tally, reasons: list[str]) -> str | None:
    """The code the consultant's counted time supports, ignoring the blocking conditions."""
    total, verbal = tally.counted, tally.verbal
    if not facts.written_report:
        reasons.append("No written report to the requester: 99446-99449 and 99451 all require one.")
        return None
    if facts.verbal_discussion:
        # docs/econsult.md#the-verbal-discussion-rule: more than 50% of the time in consultative discussion.
        if verbal * 2 > total:
            code = _band(total, VERBAL_BANDS)
            if code is None:
                reasons.append(f"{total} min of consultant time: under 5 min, no code.")
            else:
                reasons.append(
                    f"{code}: {total} min of consultant time, {verbal} min of it in verbal discussion, "
                    "with a written report."
                )
            return code
        reasons.append(
            f"Verbal discussion was {verbal} of {total} min, not more than half: 99446-99449 need more than "
            "50% of the time in consultative discussion, so only 99451 (written report) can apply."
        )
    if total >= WRITTEN_MINIMUM:
        reasons.append(f"{CPT_ECONSULT_WRITTEN_5}: {total} min of consultant time with a written report.")
        return CPT_ECONSULT_WRITTEN_5
    reasons.append(f"{total} min of consultant time: under 5 min, no code.")
    return None


def _consultant(
    facts: ConsultFacts,
    requested: datetime,
    answered: datetime | None,
    now: datetime,
    entries: list[tuple[datetime, ConsultTime]],
    consent_missing: list[str],
) -> CodeProposal:
    reasons = list(consent_missing)
    blocked = bool(consent_missing)
    tally = _tally(((at, e) for at, e in entries if e.side is Side.CONSULTANT), (requested, answered))
    if answered is None:
        reasons += tally.notes("of consultant time before the request")
        reasons.append("Not answered yet: the consultant's code is proposed once the answer is sent.")
        return CodeProposal(None, tally.counted, tuple(reasons), final=False)

    for seen in sorted(_utc("consultant_saw_patient_at", v) for v in facts.consultant_saw_patient_at):
        if requested - CONSULTANT_LOOKBACK <= seen < requested:
            blocked = True
            reasons.append(
                f"The consultant saw the patient on {_day(seen)}, within the 14 days before the request "
                f"({_day(requested)}): the consultant's code is not billable."
            )
        elif requested <= seen < answered:  # docs/econsult.md#frequency-and-look-back-rules
            blocked = True
            reasons.append(
                f"The consultant saw the patient on {_day(seen)}, while the e-consult was open: the "
                "consultant's code is not billable."
            )
    window_end = answered + VISIT_AFTER_WINDOW
    for visit in sorted(
        _utc("visits_after_answer_with_consultant", v) for v in facts.visits_after_answer_with_consultant
    ):
        if answered <= visit <= window_end:
            blocked = True
            reasons.append(
                f"Visit with the consultant on {_day(visit)}, within 14 days of the answer "
                f"({_day(answered)}): the e-consult led to a visit, so the consultant's code is not billable."
            )
        elif visit > window_end:
            reasons.append(
                f"Visit with the consultant on {_day(visit)}, more than 14 days after the answer: it does "
                "not block the code unless it was the consultant's next available appointment (check)."
            )
    frequency = _frequency(
        sorted(_utc("prior_consultant_codes_at", p) for p in facts.prior_consultant_codes_at),
        answered,
        "by this consultant for this patient",
    )
    blocked = blocked or bool(frequency)
    reasons += frequency
    reasons += tally.notes("of consultant time before the request or after the answer")

    code = _consultant_code(facts, tally, reasons)
    if code is not None and blocked:
        reasons.append(f"The time would support {code}, but a condition above rules it out.")
        code = None
    final = now > window_end
    if code is not None and not final:
        reasons.append(
            f"Until {window_end.isoformat()} a visit with the consultant that the answer leads to would rule "
            "the code out: the proposal is provisional."
        )
    return CodeProposal(code, tally.counted, tuple(reasons), final=final)


def _requester(
    facts: ConsultFacts,
    requested: datetime,
    answered: datetime | None,
    entries: list[tuple[datetime, ConsultTime]],
    consent_missing: list[str],
) -> CodeProposal:
    reasons = list(consent_missing)
    blocked = bool(consent_missing)
    tally = _tally(((at, e) for at, e in entries if e.side is Side.REQUESTER), (None, answered))
    frequency = _frequency(
        sorted(_utc("prior_requester_codes_at", p) for p in facts.prior_requester_codes_at),
        requested,
        f"({CPT_ECONSULT_REQUESTER}) for this patient",
    )
    blocked = blocked or bool(frequency)
    reasons += frequency
    reasons += tally.notes("of requester time after the answer (review of the report)")

    minutes = tally.counted
    code: str | None = None
    if minutes < REQUESTER_MINIMUM:
        reasons.append(
            f"{minutes} min of requester time: under 16 min (more than half of the 30 min descriptor), "
            f"no {CPT_ECONSULT_REQUESTER}."
        )
    elif blocked:
        reasons.append(
            f"The time would support {CPT_ECONSULT_REQUESTER}, but a condition above rules it out."
        )
    else:
        code = CPT_ECONSULT_REQUESTER
        reasons.append(
            f"{CPT_ECONSULT_REQUESTER}: {minutes} min of requester time preparing the referral and "
            "discussing it with the consultant."
        )
    if answered is None:
        reasons.append("Not answered yet: the requester's time may still grow, the proposal is provisional.")
    return CodeProposal(code, minutes, tuple(reasons), final=answered is not None)


def propose_econsult_codes(facts: ConsultFacts) -> EconsultProposal:
    """Propose the consultant's and the requester's codes for one e-consult
    (docs/econsult.md#codes-and-time-bands). Every blocking condition is listed in `reasons`."""
    now = _utc("now", facts.now)
    requested = _utc("requested_at", facts.requested_at)
    answered = None if facts.answered_at is None else _utc("answered_at", facts.answered_at)
    if answered is not None and answered < requested:
        raise ValueError("answered_at must not be before requested_at")
    if any(e.minutes < 0 for e in facts.entries):
        raise ValueError("time entry minutes must be 0 or more")
    entries = [(_utc("time entry at", e.at), e) for e in facts.entries]
    consent_missing: list[str] = []
    if facts.consent_recorded_at is None:
        consent_missing.append(
            "No verbal patient consent recorded: it is required for each e-consult (the patient may owe "
            "cost-sharing), so neither side's code is billable."
        )
    else:
        _utc("consent_recorded_at", facts.consent_recorded_at)
    return EconsultProposal(
        consultant=_consultant(facts, requested, answered, now, entries, consent_missing),
        requester=_requester(facts, requested, answered, entries, consent_missing),
    )


# ---------------------------------------------------------------------------------------------------------
# Turnaround and due dates (docs/econsult.md#due-dates)
# ---------------------------------------------------------------------------------------------------------


def turnaround(requested_at: datetime, answered_at: datetime) -> timedelta:
    """Elapsed time from the request to the answer (wall-clock, not business hours)."""
    requested = _utc("requested_at", requested_at)
    answered = _utc("answered_at", answered_at)
    if answered < requested:
        raise ValueError("answered_at must not be before requested_at")
    return answered - requested


def due_by(
    requested_at: datetime, urgent: bool, calendar: OrgCalendar, routine_business_days: int = 3
) -> datetime:
    """When the answer is due, in UTC: an urgent consult 24 hours of wall-clock time after the request, a
    routine one `routine_business_days` business days later by the organization's calendar
    (docs/messaging.md#business-day-rule). Both are product defaults, not regulations."""
    requested = _utc("requested_at", requested_at)
    if urgent:
        return requested + URGENT_TURNAROUND
    return due_at(calendar, requested, routine_business_days)
