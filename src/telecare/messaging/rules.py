"""Secure-messaging rules (pure: no database, no I/O, no clock; every "now" is a parameter).

- Emergency wording in a patient's message, and the guidance the composer shows
  (docs/messaging.md#emergency-wording).
- Business-day deadlines for response-time targets and business minutes for turnaround reporting
  (docs/messaging.md#response-time-targets).
- The online digital E/M code a patient-initiated thread supports (docs/messaging.md#online-digital-em).
  This only proposes a code; the clinician confirms it."""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from telecare.identity.models import Role

# ---------------------------------------------------------------------------------------------------------
# Emergency wording (docs/messaging.md#emergency-wording)
# ---------------------------------------------------------------------------------------------------------


class EmergencyKind(enum.StrEnum):
    MEDICAL = "medical"
    MENTAL_HEALTH = "mental-health"


# Phrases as shown to staff. Matching folds case, accents (NFKD), apostrophes and punctuation, and needs
# whole words, so "heartburn" is not "heart attack" and "painting" is not "pain". Singular "stroke" only:
# "strokes of luck" does not match, "a stroke of luck" does (over-triggering only raises priority and shows
# guidance; docs/messaging.md#term-lists). No negation handling: "no chest pain" matches
# (docs/messaging.md#no-negation-handling).
MEDICAL_TERMS_EN: tuple[str, ...] = (
    "chest pain",
    "chest pains",
    "chest pressure",
    "chest tightness",
    "heart attack",
    "can't breathe",
    "cannot breathe",
    "can not breathe",
    "unable to breathe",
    "trouble breathing",
    "difficulty breathing",
    "short of breath",
    "shortness of breath",
    "stroke",
    "mini stroke",
    "mini strokes",
    "face drooping",
    "facial droop",
    "slurred speech",
    "unconscious",
    "passed out",
    "fainted",
    "fainting",
    "seizure",
    "seizures",
    "severe bleeding",
    "bleeding heavily",
    "heavy bleeding",
    "won't stop bleeding",
    "overdose",
    "overdosed",
    "anaphylaxis",
    "anaphylactic",
    "throat swelling",
    "throat is swelling",
    "throat closing",
    "choking",
)
MEDICAL_TERMS_ES: tuple[str, ...] = (
    "dolor de pecho",
    "dolor en el pecho",
    "no puedo respirar",
    "dificultad para respirar",
    "infarto",
    "ataque al corazón",
    "derrame cerebral",
    "convulsión",
    "convulsiones",
    "sangrado abundante",
    "desmayo",
    "me desmayé",
    "sobredosis",
)
MENTAL_HEALTH_TERMS_EN: tuple[str, ...] = (
    "suicide",
    "suicidal",
    "kill myself",
    "end my life",
    "take my own life",
    "want to die",
    "wanna die",
    "hurt myself",
    "self harm",
    "self-harm",
    "selfharm",
    "no reason to live",
    "better off dead",
)
MENTAL_HEALTH_TERMS_ES: tuple[str, ...] = (
    "suicidio",
    "suicidarme",
    "quitarme la vida",
    "matarme",
    "quiero morir",
    "quiero morirme",
    "hacerme daño",
    "no quiero vivir",
)

_APOSTROPHES = dict.fromkeys(map(ord, "'’‘`´ʼ′"), None)
_NON_WORD = re.compile(r"[^a-z0-9]+")


def _fold(text: str) -> str:
    """Lower case, no accents, no apostrophes, every other non-alphanumeric run as one space, padded with
    spaces so that a phrase matches only on word boundaries."""
    text = text.translate(_APOSTROPHES)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    return " " + " ".join(_NON_WORD.sub(" ", text).split()) + " "


def _index(kind: EmergencyKind, *lists: tuple[str, ...]) -> tuple[tuple[str, str, EmergencyKind], ...]:
    return tuple((_fold(term), term, kind) for terms in lists for term in terms)


_TERMS = _index(EmergencyKind.MEDICAL, MEDICAL_TERMS_EN, MEDICAL_TERMS_ES) + _index(
    EmergencyKind.MENTAL_HEALTH, MENTAL_HEALTH_TERMS_EN, MENTAL_HEALTH_TERMS_ES
)


@dataclass(frozen=True)
class EmergencyMatch:
    kinds: frozenset[EmergencyKind]
    terms: tuple[str, ...]  # the listed phrases that matched, never the patient's own text


def find_emergency_terms(text: str) -> EmergencyMatch | None:
    folded = _fold(text)
    kinds: set[EmergencyKind] = set()
    terms: list[str] = []
    for pattern, term, kind in _TERMS:
        if pattern in folded:
            kinds.add(kind)
            terms.append(term)
    return EmergencyMatch(frozenset(kinds), tuple(terms)) if terms else None


@dataclass(frozen=True)
class Guidance:
    not_for_emergencies: str
    call_911: str
    crisis_988: str


# The composer's text (docs/messaging.md#guidance-shown). 911 for any emergency; 988 (call or text, the
# Suicide and Crisis Lifeline) for a mental-health crisis.
EMERGENCY_GUIDANCE: dict[str, Guidance] = {
    "en": Guidance(
        not_for_emergencies=(
            "Messages are not for emergencies: your care team may not read this message for some time."
        ),
        call_911="If this is a medical emergency, call 911 now or go to the nearest emergency room.",
        crisis_988=(
            "If you are thinking about suicide or are in a mental-health crisis, call or text 988 "
            "(Suicide and Crisis Lifeline) now. If you are in immediate danger, call 911."
        ),
    ),
    "es": Guidance(
        not_for_emergencies=(
            "Los mensajes no son para emergencias: es posible que su equipo de atención no lea este "
            "mensaje durante un tiempo."
        ),
        call_911=(
            "Si se trata de una emergencia médica, llame al 911 ahora o vaya a la sala de emergencias más "
            "cercana."
        ),
        crisis_988=(
            "Si está pensando en el suicidio o tiene una crisis de salud mental, llame o envíe un mensaje "
            "de texto al 988 (Línea de Prevención del Suicidio y Crisis) ahora. Si corre peligro inmediato, "
            "llame al 911."
        ),
    ),
}


def guidance_for(match: EmergencyMatch | None, *, language: str = "en") -> list[str]:
    """The lines to show for a match, in the patient's language (BCP 47; English unless it is Spanish).
    Every match gets "not for emergencies" and 911; a mental-health match also gets 988."""
    if match is None:
        return []
    guidance = EMERGENCY_GUIDANCE.get(language.split("-")[0].lower(), EMERGENCY_GUIDANCE["en"])
    lines = [guidance.not_for_emergencies, guidance.call_911]
    if EmergencyKind.MENTAL_HEALTH in match.kinds:
        lines.append(guidance.crisis_988)
    return lines


# ---------------------------------------------------------------------------------------------------------
# Business days (docs/messaging.md#business-day-rule)
# ---------------------------------------------------------------------------------------------------------

MONDAY_TO_FRIDAY = frozenset({0, 1, 2, 3, 4})  # date.weekday() numbers: Monday = 0 ... Sunday = 6


@dataclass(frozen=True)
class OrgCalendar:
    """An organization's business hours: local wall times in `timezone`, holidays as local dates."""

    timezone: str  # IANA name, e.g. "America/New_York"
    workdays: frozenset[int] = MONDAY_TO_FRIDAY
    opens: time = time(8, 0)
    closes: time = time(17, 0)
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {self.timezone!r}") from exc
        if not self.workdays or not self.workdays <= frozenset(range(7)):
            raise ValueError("workdays must be a non-empty set of weekday numbers 0-6")
        if self.opens.tzinfo is not None or self.closes.tzinfo is not None:
            raise ValueError("opens and closes are local wall times, without tzinfo")
        if not self.opens < self.closes:
            raise ValueError("opens must be before closes")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances by key


def _utc(name: str, value: datetime) -> datetime:
    """`value` in UTC. Python subtracts and compares two datetimes sharing one tzinfo by wall time, which is
    wrong across a DST change, so every input is moved to UTC before any arithmetic."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _wall(calendar: OrgCalendar, d: date, t: time) -> datetime:
    """The instant local wall time `t` on `d` names, in UTC. A time skipped by a DST gap moves forward by
    the gap; a repeated one is its first occurrence (fold=0)."""
    return datetime.combine(d, t, tzinfo=calendar.zone).astimezone(UTC)


def is_business_day(calendar: OrgCalendar, d: date) -> bool:
    return d.weekday() in calendar.workdays and d not in calendar.holidays


def _next_business_day(calendar: OrgCalendar, d: date) -> date:
    d += timedelta(days=1)
    while not is_business_day(calendar, d):
        d += timedelta(days=1)
    return d


def _add_business_days(calendar: OrgCalendar, d: date, n: int) -> date:
    for _ in range(n):
        d = _next_business_day(calendar, d)
    return d


def is_open(calendar: OrgCalendar, at: datetime) -> bool:
    """Within business hours: a business day, opens <= local time < closes."""
    at = _utc("at", at)
    d = at.astimezone(calendar.zone).date()
    return is_business_day(calendar, d) and _wall(calendar, d, calendar.opens) <= at < _wall(
        calendar, d, calendar.closes
    )


def next_opening(calendar: OrgCalendar, at: datetime) -> datetime:
    """The first business-day opening at or after `at` (UTC). During business hours that is the next
    business day's opening, not `at`."""
    at = _utc("at", at)
    d = at.astimezone(calendar.zone).date()
    if not is_business_day(calendar, d) or _wall(calendar, d, calendar.opens) < at:
        d = _next_business_day(calendar, d)
    return _wall(calendar, d, calendar.opens)


def due_at(calendar: OrgCalendar, received_at: datetime, business_days: int) -> datetime:
    """The response deadline `business_days` business days after receipt.

    docs/messaging.md#business-day-rule: the clock starts at receipt during business hours, otherwise at
    the next opening. The deadline is the same local wall time on the N-th following business day; N = 0
    means the close of the business day the clock started on. Returned in UTC."""
    received_at = _utc("received_at", received_at)
    if business_days < 0:
        raise ValueError("business_days must be 0 or more")
    zone = calendar.zone
    start = received_at if is_open(calendar, received_at) else next_opening(calendar, received_at)
    local = start.astimezone(zone)
    if business_days == 0:
        return _wall(calendar, local.date(), calendar.closes)
    d = _add_business_days(calendar, local.date(), business_days)
    # Same wall time, rebuilt on the due date so that a DST change in between keeps the clock reading.
    return _wall(calendar, d, local.time().replace(fold=0))


def is_overdue(calendar: OrgCalendar, received_at: datetime, business_days: int, now: datetime) -> bool:
    """Past the deadline; at the deadline itself a reply is still on time."""
    now = _utc("now", now)
    return now > due_at(calendar, received_at, business_days)


def business_minutes_between(calendar: OrgCalendar, start: datetime, end: datetime) -> int:
    """Whole minutes of [start, end) that fall inside business hours (elapsed time, so a business day that
    spans a DST change counts its real length). 0 when end is not after start."""
    start = _utc("start", start)
    end = _utc("end", end)
    if end <= start:
        return 0
    zone = calendar.zone
    d = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    seconds = 0.0
    while d <= last:
        if is_business_day(calendar, d):
            lo = max(start, _wall(calendar, d, calendar.opens))
            hi = min(end, _wall(calendar, d, calendar.closes))
            if hi > lo:
                seconds += (hi - lo).total_seconds()
        d += timedelta(days=1)
    return int(seconds // 60)


# ---------------------------------------------------------------------------------------------------------
# Online digital E/M (docs/messaging.md#online-digital-em)
# ---------------------------------------------------------------------------------------------------------

# docs/messaging.md#codes-and-time-bands: cumulative time over up to 7 days, from the reporting clinician's
# first review of a patient-initiated portal inquiry; established patients only.
CPT_ONLINE_EM_5_10 = "99421"  # Online digital E/M, established patient, 5–10 minutes
CPT_ONLINE_EM_11_20 = "99422"  # Online digital E/M, established patient, 11–20 minutes
CPT_ONLINE_EM_21_PLUS = "99423"  # Online digital E/M, established patient, 21 or more minutes
# Qualified non-physician health care professional online digital assessment and management, same bands:
CPT_NONPHYSICIAN_ONLINE_5_10 = "98970"  # Non-physician HCP online digital assessment, 5–10 minutes
CPT_NONPHYSICIAN_ONLINE_11_20 = "98971"  # Non-physician HCP online digital assessment, 11–20 minutes
CPT_NONPHYSICIAN_ONLINE_21_PLUS = "98972"  # Non-physician HCP online digital assessment, 21 or more minutes

# (lowest minutes, code), highest first; under 5 minutes no code.
ONLINE_EM_BANDS: tuple[tuple[int, str], ...] = (
    (21, CPT_ONLINE_EM_21_PLUS),
    (11, CPT_ONLINE_EM_11_20),
    (5, CPT_ONLINE_EM_5_10),
)
NONPHYSICIAN_ONLINE_BANDS: tuple[tuple[int, str], ...] = (
    (21, CPT_NONPHYSICIAN_ONLINE_21_PLUS),
    (11, CPT_NONPHYSICIAN_ONLINE_11_20),
    (5, CPT_NONPHYSICIAN_ONLINE_5_10),
)
# "Up to 7 days": [first review, first review + 7 x 24 h). docs/messaging.md#seven-day-window
DIGITAL_EM_WINDOW = timedelta(days=7)
# A related E/M visit in the 7 days before the first review (inclusive) absorbs the work
# (docs/messaging.md#exclusions).
RELATED_VISIT_LOOKBACK = timedelta(days=7)


class BillingClass(enum.StrEnum):
    """Whose time counts, and towards which codes (docs/messaging.md#who-may-report-which-code)."""

    PHYSICIAN_QHP = "physician-qhp"  # physicians and QHPs who report E/M (NP, PA, CNM, CNS): 99421-99423
    NONPHYSICIAN_QHP = "nonphysician-qhp"  # qualified non-physician HCPs: 98970-98972 (confirm with the MAC)
    STAFF = "staff"  # clinical staff (RN, LPN, MA) and non-clinical staff: time never counts


# Credentials that make a nurse (or anyone) a QHP who reports E/M codes; "-BC"/"-C" suffixes are dropped
# first. DNP is a degree, not a practice licence, so it does not qualify by itself.
_QHP_CREDENTIALS = frozenset({"NP", "APRN", "CNP", "CNM", "CNS", "PA"})
_ROLE_CLASS: dict[Role, BillingClass] = {
    Role.PHYSICIAN: BillingClass.PHYSICIAN_QHP,
    Role.NURSE: BillingClass.STAFF,
    Role.THERAPIST: BillingClass.NONPHYSICIAN_QHP,
    Role.PHARMACIST: BillingClass.NONPHYSICIAN_QHP,
}


def _is_qhp_credential(token: str) -> bool:
    base = token.upper().split("-")[0]
    return base in _QHP_CREDENTIALS or (base.endswith("NP") and base != "DNP")


def billing_class_for(role: Role, credentials: str = "") -> BillingClass:
    """The billing class of a user's time from their role and `Practitioner.credentials` ("MD", "RN, FNP-BC",
    "PhD, LP"). An NP/PA credential makes any clinical role a physician-level QHP; a nurse without one is
    clinical staff; therapists and pharmacists are qualified non-physician HCPs; everyone else is staff."""
    default = _ROLE_CLASS.get(role, BillingClass.STAFF)
    if role in _ROLE_CLASS and any(_is_qhp_credential(t) for t in re.split(r"[^A-Za-z-]+", credentials) if t):
        return BillingClass.PHYSICIAN_QHP
    return default


@dataclass(frozen=True)
class TimeEntry:
    at: datetime  # when the work was done; the whole entry belongs to the window `at` falls in
    minutes: int
    billing_class: BillingClass
    counts: bool = True  # False for work the codes exclude: scheduling, test-result notes, a separate service


@dataclass(frozen=True)
class DigitalVisitFacts:
    patient_initiated: bool
    established_patient: bool
    first_review_at: datetime | None  # the reporting clinician's first review of the inquiry
    time_entries: tuple[TimeEntry, ...]
    related_em_visit_at: tuple[datetime, ...]  # E/M visits of this patient for a related problem
    now: datetime
    thread_closed_at: datetime | None = None


@dataclass(frozen=True)
class DigitalEmProposal:
    code: str | None
    minutes: int
    window_start: datetime | None
    window_end: datetime | None
    reasons: tuple[str, ...]
    final: bool


def _band(minutes: int, bands: Iterable[tuple[int, str]]) -> str | None:
    for lowest, code in bands:
        if minutes >= lowest:
            return code
    return None


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def propose_digital_em(facts: DigitalVisitFacts) -> DigitalEmProposal:
    """Propose 99421-99423 or 98970-98972 for a portal thread (docs/messaging.md#online-digital-em).
    Every blocking condition is listed in `reasons`, so the clinician sees all of them at once."""
    now = _utc("now", facts.now)
    entries = [(_utc("time entry at", e.at), e) for e in facts.time_entries]
    if any(e.minutes < 0 for e in facts.time_entries):
        raise ValueError("time entry minutes must be 0 or more")
    visits = sorted(_utc("related_em_visit_at", v) for v in facts.related_em_visit_at)
    closed_at = None if facts.thread_closed_at is None else _utc("thread_closed_at", facts.thread_closed_at)
    reasons: list[str] = []
    blocked = False
    if not facts.patient_initiated:
        blocked = True
        reasons.append("Not patient-initiated: online digital E/M requires a patient-initiated inquiry.")
    if not facts.established_patient:
        blocked = True
        reasons.append("New patient: online digital E/M is for established patients only.")
    if facts.first_review_at is None:
        reasons.append("No clinician review yet: the 7-day window starts at the first review.")
        return DigitalEmProposal(None, 0, None, None, tuple(reasons), final=False)

    start = _utc("first_review_at", facts.first_review_at)
    end = start + DIGITAL_EM_WINDOW

    for visit in visits:
        if start - RELATED_VISIT_LOOKBACK <= visit < start:
            blocked = True
            reasons.append(
                f"Related E/M visit on {_day(visit)}, within the 7 days before the first review: the work "
                "is part of that visit."
            )
        elif start <= visit < end:  # unverified rule: docs/messaging.md#exclusions
            blocked = True
            reasons.append(
                f"Related E/M visit on {_day(visit)}, within the 7-day window: the work is part of that "
                "visit."
            )

    totals = {BillingClass.PHYSICIAN_QHP: 0, BillingClass.NONPHYSICIAN_QHP: 0}
    outside = excluded = staff = 0
    for at, entry in entries:
        if not start <= at < end:
            outside += entry.minutes
        elif not entry.counts:
            excluded += entry.minutes
        elif entry.billing_class is BillingClass.STAFF:
            staff += entry.minutes
        else:
            totals[entry.billing_class] += entry.minutes
    if outside:
        reasons.append(
            f"{outside} min outside the window (before the first review or after it closed) not counted."
        )
    if excluded:
        reasons.append(
            f"{excluded} min of excluded work (scheduling, test-result notes and the like) not counted."
        )
    if staff:
        reasons.append(f"{staff} min of clinical-staff time not counted.")

    # One family per thread: the one with more counted minutes, physician/QHP on a tie.
    physician = totals[BillingClass.PHYSICIAN_QHP]
    nonphysician = totals[BillingClass.NONPHYSICIAN_QHP]
    if nonphysician > physician:
        minutes, bands, family, other = (
            nonphysician,
            NONPHYSICIAN_ONLINE_BANDS,
            "non-physician HCP",
            physician,
        )
    else:
        minutes, bands, family, other = physician, ONLINE_EM_BANDS, "physician/QHP", nonphysician
    if other:
        reasons.append(
            f"{other} min by the other clinician family not added (codes of one family per thread)."
        )

    code = _band(minutes, bands)
    if code is None:
        reasons.append(f"{minutes} min of {family} time: under 5 min, no code.")
    elif blocked:
        reasons.append(
            f"{minutes} min of {family} time would support {code}, but a condition above rules it out."
        )
        code = None
    else:
        reasons.append(f"{code}: {minutes} min of {family} time in the 7-day window.")

    final = now >= end or (closed_at is not None and closed_at <= now)
    if not final:
        reasons.append(f"Window open until {end.astimezone(UTC).isoformat()}: the proposal is provisional.")
    return DigitalEmProposal(code, minutes, start, end, tuple(reasons), final=final)
