"""Messaging rules at their edges (pure, no database): emergency wording, business-day deadlines and the
online digital E/M proposal (docs/messaging.md#emergency-wording, docs/messaging.md#business-day-rule and
#online-digital-em)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.identity.models import Role
from telecare.messaging.rules import (
    CPT_NONPHYSICIAN_ONLINE_5_10,
    CPT_NONPHYSICIAN_ONLINE_11_20,
    CPT_NONPHYSICIAN_ONLINE_21_PLUS,
    CPT_ONLINE_EM_5_10,
    CPT_ONLINE_EM_11_20,
    CPT_ONLINE_EM_21_PLUS,
    EMERGENCY_GUIDANCE,
    MEDICAL_TERMS_EN,
    MEDICAL_TERMS_ES,
    MENTAL_HEALTH_TERMS_EN,
    MENTAL_HEALTH_TERMS_ES,
    BillingClass,
    DigitalVisitFacts,
    EmergencyKind,
    OrgCalendar,
    TimeEntry,
    billing_class_for,
    business_minutes_between,
    due_at,
    find_emergency_terms,
    guidance_for,
    is_business_day,
    is_open,
    is_overdue,
    next_opening,
    propose_digital_em,
)

NY = ZoneInfo("America/New_York")
CAL = OrgCalendar("America/New_York")


def ny(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=NY)


# --- Emergency wording --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "term"),
    [
        ("I have CHEST PAIN since this morning", EmergencyKind.MEDICAL, "chest pain"),
        ("chest   pain!!", EmergencyKind.MEDICAL, "chest pain"),
        ("I think it's a heart-attack", EmergencyKind.MEDICAL, "heart attack"),
        ("I can't breathe", EmergencyKind.MEDICAL, "can't breathe"),
        ("I can’t breathe", EmergencyKind.MEDICAL, "can't breathe"),
        ("i cant breathe", EmergencyKind.MEDICAL, "can't breathe"),
        ("I can`t breathe", EmergencyKind.MEDICAL, "can't breathe"),
        ("I cannot breathe", EmergencyKind.MEDICAL, "cannot breathe"),
        ("trouble breathing at night", EmergencyKind.MEDICAL, "trouble breathing"),
        ("very short of breath", EmergencyKind.MEDICAL, "short of breath"),
        ("Is this a stroke?", EmergencyKind.MEDICAL, "stroke"),
        ("her face drooping on one side", EmergencyKind.MEDICAL, "face drooping"),
        ("slurred speech", EmergencyKind.MEDICAL, "slurred speech"),
        ("he passed out", EmergencyKind.MEDICAL, "passed out"),
        ("she fainted twice", EmergencyKind.MEDICAL, "fainted"),
        ("had a seizure", EmergencyKind.MEDICAL, "seizure"),
        ("the cut is bleeding heavily", EmergencyKind.MEDICAL, "bleeding heavily"),
        ("I took an overdose", EmergencyKind.MEDICAL, "overdose"),
        ("my throat swelling after the shot", EmergencyKind.MEDICAL, "throat swelling"),
        ("baby is choking", EmergencyKind.MEDICAL, "choking"),
        ("Tengo dolor de pecho", EmergencyKind.MEDICAL, "dolor de pecho"),
        ("NO PUEDO RESPIRAR", EmergencyKind.MEDICAL, "no puedo respirar"),
        ("creo que es un infarto", EmergencyKind.MEDICAL, "infarto"),
        ("un derrame cerebral", EmergencyKind.MEDICAL, "derrame cerebral"),
        ("tuvo una convulsión", EmergencyKind.MEDICAL, "convulsión"),
        ("tuvo una convulsion", EmergencyKind.MEDICAL, "convulsión"),
        ("sangrado abundante", EmergencyKind.MEDICAL, "sangrado abundante"),
        ("un desmayo", EmergencyKind.MEDICAL, "desmayo"),
        ("sobredosis de pastillas", EmergencyKind.MEDICAL, "sobredosis"),
        ("I feel suicidal", EmergencyKind.MENTAL_HEALTH, "suicidal"),
        ("thinking about suicide", EmergencyKind.MENTAL_HEALTH, "suicide"),
        ("I want to kill myself", EmergencyKind.MENTAL_HEALTH, "kill myself"),
        ("I want to end my life.", EmergencyKind.MENTAL_HEALTH, "end my life"),
        ("I just want to die", EmergencyKind.MENTAL_HEALTH, "want to die"),
        ("I might hurt myself", EmergencyKind.MENTAL_HEALTH, "hurt myself"),
        ("history of self-harm", EmergencyKind.MENTAL_HEALTH, "self harm"),
        ("there is no reason to live", EmergencyKind.MENTAL_HEALTH, "no reason to live"),
        ("pienso en el suicidio", EmergencyKind.MENTAL_HEALTH, "suicidio"),
        ("quiero quitarme la vida", EmergencyKind.MENTAL_HEALTH, "quitarme la vida"),
        ("voy a matarme", EmergencyKind.MENTAL_HEALTH, "matarme"),
        ("Quiero morir", EmergencyKind.MENTAL_HEALTH, "quiero morir"),
        ("quiero hacerme daño", EmergencyKind.MENTAL_HEALTH, "hacerme daño"),
        ("quiero hacerme dano", EmergencyKind.MENTAL_HEALTH, "hacerme daño"),
    ],
)
def test_emergency_wording_is_found_in_english_and_spanish(text: str, kind: EmergencyKind, term: str) -> None:
    match = find_emergency_terms(text)
    assert match is not None
    assert kind in match.kinds
    assert term in match.terms


@pytest.mark.parametrize(
    "text",
    [
        "I have heartburn after dinner",
        "I was painting all weekend and my back has some pain",
        "Two strokes of luck this week!",
        "Could you please refill my lisinopril 10 mg? I have 3 days left.",
        "My chest of drawers fell over, no injuries",
        "Breathing exercises are helping",
        "Quiero una cita para la próxima semana",
        "",
    ],
)
def test_ordinary_messages_do_not_match(text: str) -> None:
    assert find_emergency_terms(text) is None


def test_match_reports_the_listed_phrases_not_the_patients_text() -> None:
    match = find_emergency_terms("CHEST-PAIN and I CAN’T   BREATHE, also suicidal")
    assert match is not None
    assert match.kinds == {EmergencyKind.MEDICAL, EmergencyKind.MENTAL_HEALTH}
    assert match.terms == ("chest pain", "can't breathe", "suicidal")


def test_negation_is_not_handled_so_it_over_triggers() -> None:
    # docs/messaging.md#no-negation-handling
    match = find_emergency_terms("No chest pain today")
    assert match is not None
    assert match.terms == ("chest pain",)


def test_every_listed_term_matches_itself() -> None:
    for terms, kind in (
        (MEDICAL_TERMS_EN, EmergencyKind.MEDICAL),
        (MEDICAL_TERMS_ES, EmergencyKind.MEDICAL),
        (MENTAL_HEALTH_TERMS_EN, EmergencyKind.MENTAL_HEALTH),
        (MENTAL_HEALTH_TERMS_ES, EmergencyKind.MENTAL_HEALTH),
    ):
        for term in terms:
            match = find_emergency_terms(f"... {term.upper()} ...")
            assert match is not None, term
            assert term in match.terms
            assert kind in match.kinds


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
@settings(max_examples=200, deadline=None)
def test_emergency_matching_never_fails_and_reports_only_listed_terms(text: str) -> None:
    listed = {*MEDICAL_TERMS_EN, *MEDICAL_TERMS_ES, *MENTAL_HEALTH_TERMS_EN, *MENTAL_HEALTH_TERMS_ES}
    match = find_emergency_terms(text)
    if match is not None:
        assert match.kinds
        assert set(match.terms) <= listed


def test_guidance_gives_988_only_for_mental_health() -> None:
    medical = find_emergency_terms("chest pain")
    mental = find_emergency_terms("I want to die")
    medical_lines = guidance_for(medical)
    mental_lines = guidance_for(mental)
    assert any("911" in line for line in medical_lines)
    assert not any("988" in line for line in medical_lines)
    assert any("988" in line and "Suicide and Crisis Lifeline" in line for line in mental_lines)
    assert any("911" in line for line in mental_lines)
    assert medical_lines[0] == EMERGENCY_GUIDANCE["en"].not_for_emergencies
    assert guidance_for(None) == []


def test_guidance_in_spanish_for_spanish_speakers() -> None:
    lines = guidance_for(find_emergency_terms("quiero morir"), language="es-US")
    assert lines == [
        EMERGENCY_GUIDANCE["es"].not_for_emergencies,
        EMERGENCY_GUIDANCE["es"].call_911,
        EMERGENCY_GUIDANCE["es"].crisis_988,
    ]
    assert "988" in lines[2]
    assert guidance_for(find_emergency_terms("chest pain"), language="fr")[0] == (
        EMERGENCY_GUIDANCE["en"].not_for_emergencies
    )


# --- Business days ------------------------------------------------------------------------------------


def test_friday_afternoon_plus_two_business_days_is_tuesday_same_time() -> None:
    friday = ny(2026, 12, 4, 16)  # Friday
    assert due_at(CAL, friday, 2) == ny(2026, 12, 8, 16).astimezone(UTC)
    assert due_at(CAL, friday, 2).tzinfo is UTC


def test_saturday_receipt_counts_from_monday_opening() -> None:
    saturday = ny(2026, 12, 5, 11)
    assert next_opening(CAL, saturday) == ny(2026, 12, 7, 8)
    assert due_at(CAL, saturday, 1) == ny(2026, 12, 8, 8)
    assert due_at(CAL, saturday, 0) == ny(2026, 12, 7, 17)


def test_evening_and_early_receipts_count_from_the_next_opening() -> None:
    assert due_at(CAL, ny(2026, 12, 1, 17), 1) == ny(2026, 12, 3, 8)  # at closing time: closed
    assert due_at(CAL, ny(2026, 12, 1, 16, 59), 1) == ny(2026, 12, 2, 16, 59)
    assert due_at(CAL, ny(2026, 12, 1, 7, 59), 1) == ny(2026, 12, 2, 8)
    assert due_at(CAL, ny(2026, 12, 1, 8), 1) == ny(2026, 12, 2, 8)


def test_same_business_day_target_is_the_close() -> None:
    assert due_at(CAL, ny(2026, 12, 1, 9), 0) == ny(2026, 12, 1, 17)
    assert due_at(CAL, ny(2026, 12, 1, 20), 0) == ny(2026, 12, 2, 17)


def test_holidays_are_skipped() -> None:
    cal = OrgCalendar("America/New_York", holidays=frozenset({date(2026, 12, 25)}))
    assert not is_business_day(cal, date(2026, 12, 25))
    assert due_at(cal, ny(2026, 12, 24, 10), 1) == ny(2026, 12, 28, 10)  # Thu -> (Fri holiday) Mon
    assert due_at(cal, ny(2026, 12, 25, 10), 1) == ny(2026, 12, 29, 8)  # holiday counts from Monday opening
    assert next_opening(cal, ny(2026, 12, 24, 18)) == ny(2026, 12, 28, 8)


def test_dst_spring_forward_keeps_the_local_clock_time() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT (America/New_York).
    received = ny(2026, 3, 6, 16)  # Friday, EST (UTC-5)
    due = due_at(CAL, received, 1)
    assert due == datetime(2026, 3, 9, 20, tzinfo=UTC)  # Monday 16:00 EDT (UTC-4)
    assert due.astimezone(NY).time() == time(16)
    assert next_opening(CAL, ny(2026, 3, 7, 12)) == datetime(2026, 3, 9, 12, tzinfo=UTC)


def test_dst_fall_back_keeps_the_local_clock_time() -> None:
    # 2026-11-01 02:00 EDT -> 01:00 EST.
    received = ny(2026, 10, 30, 9, 30)  # Friday, EDT (UTC-4)
    due = due_at(CAL, received, 1)
    assert due == datetime(2026, 11, 2, 14, 30, tzinfo=UTC)  # Monday 09:30 EST (UTC-5)


def test_business_minutes_across_a_dst_day_count_elapsed_time() -> None:
    # A calendar open over the 02:00 gap: 00:00-06:00 on Sunday 2026-03-08 lasts 5 real hours.
    cal = OrgCalendar("America/New_York", workdays=frozenset(range(7)), opens=time(0), closes=time(6))
    assert business_minutes_between(cal, ny(2026, 3, 8, 0), ny(2026, 3, 8, 6)) == 5 * 60
    assert business_minutes_between(cal, ny(2026, 11, 1, 0), ny(2026, 11, 1, 6)) == 7 * 60


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 12, 1, 9)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        due_at(CAL, naive, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_opening(CAL, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        business_minutes_between(CAL, naive, ny(2026, 12, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        is_overdue(CAL, ny(2026, 12, 1, 9), 1, naive)


def test_calendar_is_validated() -> None:
    with pytest.raises(ValueError, match="time zone"):
        OrgCalendar("Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="before closes"):
        OrgCalendar("UTC", opens=time(17), closes=time(8))
    with pytest.raises(ValueError, match="weekday"):
        OrgCalendar("UTC", workdays=frozenset({7}))
    with pytest.raises(ValueError, match="0 or more"):
        due_at(CAL, ny(2026, 12, 1, 9), -1)


def test_business_minutes_across_a_weekend() -> None:
    # Friday 16:30 -> Monday 09:15: 30 min Friday + 75 min Monday.
    assert business_minutes_between(CAL, ny(2026, 12, 4, 16, 30), ny(2026, 12, 7, 9, 15)) == 105
    assert business_minutes_between(CAL, ny(2026, 12, 5, 9), ny(2026, 12, 6, 17)) == 0
    assert business_minutes_between(CAL, ny(2026, 12, 7, 9), ny(2026, 12, 7, 9)) == 0
    assert business_minutes_between(CAL, ny(2026, 12, 7, 10), ny(2026, 12, 7, 9)) == 0
    assert business_minutes_between(CAL, ny(2026, 12, 7, 0), ny(2026, 12, 12, 0)) == 5 * 9 * 60


def test_overdue_only_after_the_deadline() -> None:
    received = ny(2026, 12, 4, 16)
    due = due_at(CAL, received, 2)
    assert not is_overdue(CAL, received, 2, due)
    assert is_overdue(CAL, received, 2, due + timedelta(seconds=1))
    assert not is_overdue(CAL, received, 2, due - timedelta(hours=30))


def test_is_open() -> None:
    assert is_open(CAL, ny(2026, 12, 7, 8))
    assert not is_open(CAL, ny(2026, 12, 7, 17))
    assert not is_open(CAL, ny(2026, 12, 5, 12))


CALENDARS = [
    CAL,
    OrgCalendar(
        "America/New_York",
        holidays=frozenset({date(2026, 11, 26), date(2026, 12, 25), date(2027, 1, 1), date(2026, 3, 9)}),
    ),
    OrgCalendar("Europe/London", opens=time(7, 30), closes=time(19)),
    OrgCalendar("Asia/Jerusalem", workdays=frozenset({6, 0, 1, 2, 3})),  # Sunday to Thursday
    OrgCalendar("Australia/Sydney", workdays=frozenset({0, 2, 4}), opens=time(9, 15), closes=time(13, 45)),
    OrgCalendar("Asia/Kolkata", workdays=frozenset(range(7))),
]
instants = st.datetimes(
    min_value=datetime(2026, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive; values are UTC below
    max_value=datetime(2027, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
calendars = st.sampled_from(CALENDARS)


@given(calendars, instants, instants, st.integers(0, 15))
@settings(max_examples=300, deadline=None)
def test_due_at_is_monotone_in_received_at(cal: OrgCalendar, a: datetime, b: datetime, n: int) -> None:
    first, second = sorted((a, b))
    assert due_at(cal, first, n) <= due_at(cal, second, n)


@given(calendars, instants, st.integers(0, 15))
@settings(max_examples=300, deadline=None)
def test_one_more_business_day_is_later(cal: OrgCalendar, received: datetime, n: int) -> None:
    assert due_at(cal, received, n + 1) > due_at(cal, received, n)


@given(calendars, instants, st.integers(0, 15))
@settings(max_examples=300, deadline=None)
def test_deadline_falls_on_a_business_day_within_opening_hours(
    cal: OrgCalendar, received: datetime, n: int
) -> None:
    due = due_at(cal, received, n)
    local = due.astimezone(ZoneInfo(cal.timezone))
    assert is_business_day(cal, local.date())
    assert cal.opens <= local.time() <= cal.closes
    if n > 0:
        assert is_open(cal, due)
        assert due > received


@given(calendars, instants, instants, instants)
@settings(max_examples=200, deadline=None)
def test_business_minutes_add_up(cal: OrgCalendar, a: datetime, b: datetime, c: datetime) -> None:
    x, y, z = sorted((a, b, c))
    whole = business_minutes_between(cal, x, z)
    parts = business_minutes_between(cal, x, y) + business_minutes_between(cal, y, z)
    assert parts <= whole <= parts + 1  # each part floors to whole minutes
    assert whole <= (z - x).total_seconds() / 60


# --- Online digital E/M -------------------------------------------------------------------------------

REVIEW = datetime(2026, 12, 1, 14, tzinfo=UTC)


def facts(
    *entries: TimeEntry,
    patient_initiated: bool = True,
    established_patient: bool = True,
    first_review_at: datetime | None = REVIEW,
    related: tuple[datetime, ...] = (),
    now: datetime = REVIEW + timedelta(days=8),
    thread_closed_at: datetime | None = None,
) -> DigitalVisitFacts:
    return DigitalVisitFacts(
        patient_initiated=patient_initiated,
        established_patient=established_patient,
        first_review_at=first_review_at,
        time_entries=entries,
        related_em_visit_at=related,
        now=now,
        thread_closed_at=thread_closed_at,
    )


def physician(minutes: int, at: datetime = REVIEW, counts: bool = True) -> TimeEntry:
    return TimeEntry(at=at, minutes=minutes, billing_class=BillingClass.PHYSICIAN_QHP, counts=counts)


@pytest.mark.parametrize(
    ("minutes", "code"),
    [
        (0, None),
        (4, None),
        (5, CPT_ONLINE_EM_5_10),
        (10, CPT_ONLINE_EM_5_10),
        (11, CPT_ONLINE_EM_11_20),
        (20, CPT_ONLINE_EM_11_20),
        (21, CPT_ONLINE_EM_21_PLUS),
        (90, CPT_ONLINE_EM_21_PLUS),
    ],
)
def test_online_em_code_at_every_time_edge(minutes: int, code: str | None) -> None:
    proposal = propose_digital_em(facts(physician(minutes)))
    assert proposal.code == code
    assert proposal.minutes == minutes
    assert proposal.final


def test_time_is_cumulative_over_the_window() -> None:
    proposal = propose_digital_em(facts(physician(4), physician(3, REVIEW + timedelta(days=3)), physician(4)))
    assert (proposal.code, proposal.minutes) == (CPT_ONLINE_EM_11_20, 11)


@pytest.mark.parametrize(
    ("offset", "counted"),
    [
        (-timedelta(seconds=1), False),
        (timedelta(0), True),
        (timedelta(days=7) - timedelta(seconds=1), True),
        (timedelta(days=7), False),
    ],
)
def test_window_edges(offset: timedelta, counted: bool) -> None:
    proposal = propose_digital_em(facts(physician(5), physician(10, REVIEW + offset)))
    assert proposal.window_start == REVIEW
    assert proposal.window_end == REVIEW + timedelta(days=7)
    assert proposal.minutes == (15 if counted else 5)
    assert proposal.code == (CPT_ONLINE_EM_11_20 if counted else CPT_ONLINE_EM_5_10)
    assert any("outside the window" in r for r in proposal.reasons) is not counted


def test_related_visit_exactly_seven_days_before_blocks_the_code() -> None:
    proposal = propose_digital_em(facts(physician(15), related=(REVIEW - timedelta(days=7),)))
    assert proposal.code is None
    assert proposal.minutes == 15
    assert any("Related E/M visit on 2026-11-24" in r for r in proposal.reasons)


def test_related_visit_eight_days_before_does_not_block() -> None:
    proposal = propose_digital_em(facts(physician(15), related=(REVIEW - timedelta(days=8),)))
    assert proposal.code == CPT_ONLINE_EM_11_20


def test_related_visit_inside_the_window_blocks_the_code() -> None:
    proposal = propose_digital_em(facts(physician(15), related=(REVIEW + timedelta(days=2),)))
    assert proposal.code is None
    assert proposal.minutes == 15


def test_not_patient_initiated_and_new_patient_are_both_reported() -> None:
    proposal = propose_digital_em(facts(physician(15), patient_initiated=False, established_patient=False))
    assert proposal.code is None
    assert any("Not patient-initiated" in r for r in proposal.reasons)
    assert any("New patient" in r for r in proposal.reasons)


def test_no_review_yet_has_no_window() -> None:
    proposal = propose_digital_em(facts(physician(15), first_review_at=None))
    assert (proposal.code, proposal.window_start, proposal.final) == (None, None, False)


def test_staff_and_excluded_time_do_not_count() -> None:
    proposal = propose_digital_em(
        facts(
            physician(4),
            physician(10, counts=False),  # e.g. a test-result note
            TimeEntry(at=REVIEW, minutes=30, billing_class=BillingClass.STAFF),
        )
    )
    assert (proposal.code, proposal.minutes) == (None, 4)
    assert any("clinical-staff" in r for r in proposal.reasons)
    assert any("excluded work" in r for r in proposal.reasons)


@pytest.mark.parametrize(
    ("minutes", "code"),
    [
        (4, None),
        (5, CPT_NONPHYSICIAN_ONLINE_5_10),
        (10, CPT_NONPHYSICIAN_ONLINE_5_10),
        (11, CPT_NONPHYSICIAN_ONLINE_11_20),
        (20, CPT_NONPHYSICIAN_ONLINE_11_20),
        (21, CPT_NONPHYSICIAN_ONLINE_21_PLUS),
    ],
)
def test_non_physician_time_proposes_9897x(minutes: int, code: str | None) -> None:
    therapist = TimeEntry(
        at=REVIEW, minutes=minutes, billing_class=billing_class_for(Role.THERAPIST, "PhD, LP")
    )
    assert propose_digital_em(facts(therapist)).code == code


def test_families_are_not_added_together() -> None:
    therapist = TimeEntry(at=REVIEW, minutes=12, billing_class=BillingClass.NONPHYSICIAN_QHP)
    proposal = propose_digital_em(facts(physician(6), therapist))
    assert (proposal.code, proposal.minutes) == (CPT_NONPHYSICIAN_ONLINE_11_20, 12)
    tie = propose_digital_em(facts(physician(6), TimeEntry(REVIEW, 6, BillingClass.NONPHYSICIAN_QHP)))
    assert tie.code == CPT_ONLINE_EM_5_10


@pytest.mark.parametrize(
    ("role", "credentials", "expected"),
    [
        (Role.PHYSICIAN, "MD", BillingClass.PHYSICIAN_QHP),
        (Role.NURSE, "RN", BillingClass.STAFF),
        (Role.NURSE, "RN, FNP-BC", BillingClass.PHYSICIAN_QHP),
        (Role.NURSE, "APRN", BillingClass.PHYSICIAN_QHP),
        (Role.NURSE, "RN, DNP", BillingClass.STAFF),
        (Role.NURSE, "", BillingClass.STAFF),
        (Role.THERAPIST, "PhD, LP", BillingClass.NONPHYSICIAN_QHP),
        (Role.THERAPIST, "PMHNP-BC", BillingClass.PHYSICIAN_QHP),
        (Role.PHARMACIST, "PharmD", BillingClass.NONPHYSICIAN_QHP),
        (Role.COORDINATOR, "NP", BillingClass.STAFF),
        (Role.PATIENT, "", BillingClass.STAFF),
    ],
)
def test_billing_class_from_role_and_credentials(
    role: Role, credentials: str, expected: BillingClass
) -> None:
    assert billing_class_for(role, credentials) is expected


def test_proposal_is_provisional_until_the_window_ends_or_the_thread_closes() -> None:
    end = REVIEW + timedelta(days=7)
    open_ = propose_digital_em(facts(physician(12), now=end - timedelta(seconds=1)))
    assert (open_.code, open_.final) == (CPT_ONLINE_EM_11_20, False)
    assert any("provisional" in r for r in open_.reasons)
    assert propose_digital_em(facts(physician(12), now=end)).final
    closed = propose_digital_em(
        facts(physician(12), now=REVIEW + timedelta(days=2), thread_closed_at=REVIEW + timedelta(days=1))
    )
    assert closed.final


@given(
    st.lists(
        st.tuples(st.integers(-3 * 24 * 60, 10 * 24 * 60), st.integers(0, 30), st.booleans()),
        max_size=12,
    )
)
@settings(max_examples=200, deadline=None)
def test_counted_minutes_are_the_countable_entries_inside_the_window(
    raw: list[tuple[int, int, bool]],
) -> None:
    entries = tuple(physician(m, REVIEW + timedelta(minutes=off), counts) for off, m, counts in raw)
    proposal = propose_digital_em(facts(*entries))
    expected = sum(m for off, m, counts in raw if counts and 0 <= off < 7 * 24 * 60)
    assert proposal.minutes == expected
    assert (proposal.code is None) == (expected < 5)


def test_window_is_seven_times_24_hours_even_across_a_dst_change() -> None:
    # First review Thursday 2026-03-05 10:00 EST; the window ends 168 h later, 2026-03-12 11:00 EDT.
    review = ny(2026, 3, 5, 10)
    proposal = propose_digital_em(
        facts(physician(5, review), physician(6, ny(2026, 3, 12, 10, 30)), first_review_at=review)
    )
    assert proposal.window_end == datetime(2026, 3, 12, 15, tzinfo=UTC)
    assert (proposal.minutes, proposal.code) == (11, CPT_ONLINE_EM_11_20)
