"""E-consult code rules at their edges (pure, no database): time bands, the verbal-discussion rule, the
requester code, consent, the 14-day and 7-day rules, and due dates (docs/econsult.md#codes-and-time-bands,
docs/econsult.md#frequency-and-look-back-rules and #due-dates)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telecare.econsult.rules import (
    CPT_ECONSULT_REQUESTER,
    CPT_ECONSULT_VERBAL_5_10,
    CPT_ECONSULT_VERBAL_11_20,
    CPT_ECONSULT_VERBAL_21_30,
    CPT_ECONSULT_VERBAL_31_PLUS,
    CPT_ECONSULT_WRITTEN_5,
    ConsultFacts,
    ConsultTime,
    EconsultProposal,
    Side,
    due_by,
    propose_econsult_codes,
    turnaround,
)
from telecare.messaging.rules import BillingClass, OrgCalendar

NY = ZoneInfo("America/New_York")
CAL = OrgCalendar("America/New_York")
REQUESTED = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 in New York
ANSWERED = REQUESTED + timedelta(days=1)
SETTLED = ANSWERED + timedelta(days=15)  # the 14 days after the answer are over


def consultant(
    minutes: int, verbal: bool = False, at: datetime = REQUESTED + timedelta(hours=2)
) -> ConsultTime:
    return ConsultTime(at, minutes, Side.CONSULTANT, BillingClass.PHYSICIAN_QHP, verbal=verbal)


def requester(
    minutes: int,
    at: datetime = REQUESTED - timedelta(minutes=30),
    cls: BillingClass = BillingClass.PHYSICIAN_QHP,
) -> ConsultTime:
    return ConsultTime(at, minutes, Side.REQUESTER, cls)


def facts(
    *entries: ConsultTime,
    answered_at: datetime | None = ANSWERED,
    verbal_discussion: bool = False,
    written_report: bool = True,
    consent_recorded_at: datetime | None = REQUESTED - timedelta(hours=1),
    saw: tuple[datetime, ...] = (),
    after: tuple[datetime, ...] = (),
    prior_consultant: tuple[datetime, ...] = (),
    prior_requester: tuple[datetime, ...] = (),
    now: datetime = SETTLED,
) -> ConsultFacts:
    return ConsultFacts(
        requested_at=REQUESTED,
        answered_at=answered_at,
        verbal_discussion=verbal_discussion,
        written_report=written_report,
        consent_recorded_at=consent_recorded_at,
        entries=entries,
        consultant_saw_patient_at=saw,
        visits_after_answer_with_consultant=after,
        prior_consultant_codes_at=prior_consultant,
        prior_requester_codes_at=prior_requester,
        now=now,
    )


def verbal(total: int) -> ConsultFacts:
    """`total` consultant minutes, all but one of them (or all, under 2) in the verbal discussion."""
    talk = total if total < 2 else total - 1
    return facts(consultant(talk, verbal=True), consultant(total - talk), verbal_discussion=True)


# --- Consultant time bands ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "code"),
    [
        (0, None),
        (4, None),
        (5, CPT_ECONSULT_VERBAL_5_10),
        (10, CPT_ECONSULT_VERBAL_5_10),
        (11, CPT_ECONSULT_VERBAL_11_20),
        (20, CPT_ECONSULT_VERBAL_11_20),
        (21, CPT_ECONSULT_VERBAL_21_30),
        (30, CPT_ECONSULT_VERBAL_21_30),
        (31, CPT_ECONSULT_VERBAL_31_PLUS),
        (120, CPT_ECONSULT_VERBAL_31_PLUS),
    ],
)
def test_verbal_and_written_consult_code_at_every_time_edge(minutes: int, code: str | None) -> None:
    proposal = propose_econsult_codes(verbal(minutes)).consultant
    assert (proposal.code, proposal.minutes, proposal.final) == (code, minutes, True)


@pytest.mark.parametrize(
    ("minutes", "code"),
    [
        (0, None),
        (4, None),
        (5, CPT_ECONSULT_WRITTEN_5),
        (10, CPT_ECONSULT_WRITTEN_5),
        (31, CPT_ECONSULT_WRITTEN_5),
    ],
)
def test_written_only_consult_is_99451_from_5_minutes(minutes: int, code: str | None) -> None:
    proposal = propose_econsult_codes(facts(consultant(minutes))).consultant
    assert (proposal.code, proposal.minutes) == (code, minutes)
    if code is None:
        assert any("under 5 min" in r for r in proposal.reasons)


def test_verbal_time_flag_without_a_discussion_is_a_written_consult() -> None:
    proposal = propose_econsult_codes(facts(consultant(12, verbal=True), verbal_discussion=False)).consultant
    assert proposal.code == CPT_ECONSULT_WRITTEN_5


def test_no_written_report_no_consultant_code() -> None:
    for f in (
        facts(consultant(15), written_report=False),
        facts(consultant(15, verbal=True), written_report=False, verbal_discussion=True),
    ):
        proposal = propose_econsult_codes(f).consultant
        assert proposal.code is None
        assert any("No written report" in r for r in proposal.reasons)


# --- More than half in verbal discussion --------------------------------------------------------------


def test_verbal_codes_need_more_than_half_of_the_time_in_discussion() -> None:
    more = propose_econsult_codes(
        facts(consultant(6, verbal=True), consultant(5), verbal_discussion=True)
    ).consultant
    assert more.code == CPT_ECONSULT_VERBAL_11_20


@pytest.mark.parametrize(("talk", "other"), [(5, 5), (4, 7), (0, 12)])
def test_half_or_less_in_discussion_falls_back_to_99451(talk: int, other: int) -> None:
    proposal = propose_econsult_codes(
        facts(consultant(talk, verbal=True), consultant(other), verbal_discussion=True)
    ).consultant
    assert (proposal.code, proposal.minutes) == (CPT_ECONSULT_WRITTEN_5, talk + other)
    assert any("not more than half" in r and "99451" in r for r in proposal.reasons)


def test_half_in_discussion_under_5_minutes_is_no_code() -> None:
    proposal = propose_econsult_codes(
        facts(consultant(2, verbal=True), consultant(2), verbal_discussion=True)
    ).consultant
    assert proposal.code is None


def test_fallback_needs_the_written_report() -> None:
    proposal = propose_econsult_codes(
        facts(consultant(5, verbal=True), consultant(10), verbal_discussion=True, written_report=False)
    ).consultant
    assert proposal.code is None


# --- Whose time counts --------------------------------------------------------------------------------


def test_staff_and_non_physician_time_does_not_count() -> None:
    proposal = propose_econsult_codes(
        facts(
            consultant(4),
            ConsultTime(REQUESTED + timedelta(hours=1), 30, Side.CONSULTANT, BillingClass.STAFF),
            ConsultTime(REQUESTED + timedelta(hours=1), 20, Side.CONSULTANT, BillingClass.NONPHYSICIAN_QHP),
            requester(15),
            requester(30, cls=BillingClass.STAFF),
        )
    )
    assert (proposal.consultant.code, proposal.consultant.minutes) == (None, 4)
    assert any("30 min of clinical-staff time" in r for r in proposal.consultant.reasons)
    assert any("20 min of non-physician HCP time" in r for r in proposal.consultant.reasons)
    assert (proposal.requester.code, proposal.requester.minutes) == (None, 15)
    assert any("30 min of clinical-staff time" in r for r in proposal.requester.reasons)


def test_sides_are_not_added_together() -> None:
    proposal = propose_econsult_codes(facts(consultant(4), requester(20)))
    assert (proposal.consultant.minutes, proposal.consultant.code) == (4, None)
    assert (proposal.requester.minutes, proposal.requester.code) == (20, CPT_ECONSULT_REQUESTER)


def test_consultant_time_outside_the_consult_is_not_counted() -> None:
    proposal = propose_econsult_codes(
        facts(
            consultant(3, at=REQUESTED - timedelta(seconds=1)),
            consultant(5, at=REQUESTED),
            consultant(4, at=ANSWERED),
            consultant(6, at=ANSWERED + timedelta(seconds=1)),
        )
    ).consultant
    assert (proposal.minutes, proposal.code) == (9, CPT_ECONSULT_WRITTEN_5)
    assert any(
        "9 min of consultant time before the request or after the answer" in r for r in proposal.reasons
    )


# --- Requester code -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "code"), [(0, None), (15, None), (16, CPT_ECONSULT_REQUESTER), (45, CPT_ECONSULT_REQUESTER)]
)
def test_requester_code_from_16_minutes(minutes: int, code: str | None) -> None:
    proposal = propose_econsult_codes(facts(requester(minutes))).requester
    assert (proposal.code, proposal.minutes, proposal.final) == (code, minutes, True)


def test_requester_time_adds_up_and_review_after_the_answer_does_not_count() -> None:
    proposal = propose_econsult_codes(
        facts(requester(10), requester(6, at=ANSWERED), requester(20, at=ANSWERED + timedelta(hours=1)))
    ).requester
    assert (proposal.minutes, proposal.code) == (16, CPT_ECONSULT_REQUESTER)
    assert any("20 min of requester time after the answer" in r for r in proposal.reasons)


def test_requester_code_is_provisional_while_the_consult_is_open() -> None:
    proposal = propose_econsult_codes(facts(requester(20), consultant(12), answered_at=None, now=ANSWERED))
    assert (proposal.requester.code, proposal.requester.final) == (CPT_ECONSULT_REQUESTER, False)
    assert any("provisional" in r for r in proposal.requester.reasons)
    assert (proposal.consultant.code, proposal.consultant.minutes, proposal.consultant.final) == (
        None,
        12,
        False,
    )
    assert any("Not answered yet" in r for r in proposal.consultant.reasons)


@pytest.mark.parametrize(
    ("offset", "blocked"),
    [
        (timedelta(days=7), True),
        (timedelta(days=7, seconds=1), False),
        (timedelta(days=6, hours=23), True),
        (timedelta(days=8), False),
        (-timedelta(days=3), True),
    ],
)
def test_requester_code_at_most_once_per_7_days(offset: timedelta, blocked: bool) -> None:
    proposal = propose_econsult_codes(facts(requester(20), prior_requester=(REQUESTED - offset,))).requester
    assert (proposal.code is None) is blocked
    assert proposal.minutes == 20
    assert any("within 7 days" in r for r in proposal.reasons) is blocked


# --- Consent ------------------------------------------------------------------------------------------


def test_no_consent_no_code_for_either_side() -> None:
    proposal = propose_econsult_codes(
        facts(consultant(12, verbal=True), requester(20), verbal_discussion=True, consent_recorded_at=None)
    )
    for side in (proposal.consultant, proposal.requester):
        assert side.code is None
        assert any("No verbal patient consent" in r for r in side.reasons)
        assert any("would support" in r for r in side.reasons)
    assert (proposal.consultant.minutes, proposal.requester.minutes) == (12, 20)


# --- The 14-day rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "blocked"),
    [
        (timedelta(days=14), True),  # exactly 14 days before the request: inclusive
        (timedelta(days=14, seconds=1), False),
        (timedelta(days=15), False),
        (timedelta(days=1), True),
        (timedelta(seconds=1), True),
    ],
)
def test_consultant_saw_the_patient_in_the_14_days_before_the_request(
    before: timedelta, blocked: bool
) -> None:
    proposal = propose_econsult_codes(facts(consultant(12), saw=(REQUESTED - before,)))
    assert (proposal.consultant.code is None) is blocked
    assert proposal.requester.reasons == propose_econsult_codes(facts(consultant(12))).requester.reasons
    if blocked:
        day = (REQUESTED - before).date().isoformat()
        assert any(
            f"saw the patient on {day}, within the 14 days before" in r for r in proposal.consultant.reasons
        )


def test_consultant_seeing_the_patient_while_the_consult_is_open_blocks() -> None:
    proposal = propose_econsult_codes(facts(consultant(12), saw=(REQUESTED + timedelta(hours=3),))).consultant
    assert proposal.code is None
    assert any("while the e-consult was open" in r for r in proposal.reasons)


def test_visits_after_the_answer_in_the_chart_list_are_left_to_the_led_to_list() -> None:
    proposal = propose_econsult_codes(facts(consultant(12), saw=(ANSWERED + timedelta(days=2),))).consultant
    assert proposal.code == CPT_ECONSULT_WRITTEN_5


@pytest.mark.parametrize(
    ("after", "blocked"),
    [
        (timedelta(0), True),
        (timedelta(days=3), True),
        (timedelta(days=14), True),  # exactly 14 days after the answer: inclusive
        (timedelta(days=14, seconds=1), False),
        (timedelta(days=20), False),
    ],
)
def test_answer_leading_to_a_visit_within_14_days_blocks(after: timedelta, blocked: bool) -> None:
    now = ANSWERED + timedelta(days=30)
    proposal = propose_econsult_codes(facts(consultant(12), after=(ANSWERED + after,), now=now)).consultant
    assert (proposal.code is None) is blocked
    assert proposal.final
    if not blocked:
        assert any("next available appointment" in r for r in proposal.reasons)


def test_consultant_code_is_provisional_until_14_days_after_the_answer() -> None:
    end = ANSWERED + timedelta(days=14)
    early = propose_econsult_codes(facts(consultant(12), now=ANSWERED + timedelta(hours=1))).consultant
    assert (early.code, early.final) == (CPT_ECONSULT_WRITTEN_5, False)
    assert any("provisional" in r for r in early.reasons)
    assert not propose_econsult_codes(facts(consultant(12), now=end)).consultant.final
    late = propose_econsult_codes(facts(consultant(12), now=end + timedelta(seconds=1))).consultant
    assert (late.code, late.final) == (CPT_ECONSULT_WRITTEN_5, True)
    assert not any("provisional" in r for r in late.reasons)


def test_visit_already_booked_within_14_days_blocks_before_the_window_closes() -> None:
    proposal = propose_econsult_codes(
        facts(consultant(12), after=(ANSWERED + timedelta(days=5),), now=ANSWERED + timedelta(days=1))
    ).consultant
    assert (proposal.code, proposal.final) == (None, False)
    assert any("led to a visit" in r for r in proposal.reasons)


# --- 7-day frequency, consultant ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "blocked"),
    [
        (timedelta(days=7), True),  # exactly 7 days before the answer: inclusive
        (timedelta(days=7, seconds=1), False),
        (timedelta(days=8), False),
        (timedelta(hours=1), True),
    ],
)
def test_consultant_code_at_most_once_per_7_days(offset: timedelta, blocked: bool) -> None:
    proposal = propose_econsult_codes(facts(consultant(12), prior_consultant=(ANSWERED - offset,))).consultant
    assert (proposal.code is None) is blocked
    assert any("at most one per 7 days" in r for r in proposal.reasons) is blocked


def test_every_blocking_reason_is_listed_with_its_date() -> None:
    proposal = propose_econsult_codes(
        facts(
            consultant(12),
            consent_recorded_at=None,
            saw=(datetime(2026, 10, 25, 12, tzinfo=UTC),),
            after=(datetime(2026, 11, 6, 12, tzinfo=UTC),),
            prior_consultant=(datetime(2026, 10, 30, 12, tzinfo=UTC),),
        )
    ).consultant
    text = "\n".join(proposal.reasons)
    assert proposal.code is None
    for fragment in ("consent", "on 2026-10-25", "on 2026-11-06", "on 2026-10-30", "(2026-11-03)"):
        assert fragment in text


# --- Input checks -------------------------------------------------------------------------------------


def test_naive_datetimes_and_bad_inputs_are_refused() -> None:
    naive = datetime(2026, 11, 2, 10)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        propose_econsult_codes(facts(now=naive))
    with pytest.raises(ValueError, match="timezone-aware"):
        propose_econsult_codes(facts(consultant(5, at=naive)))
    with pytest.raises(ValueError, match="before requested_at"):
        propose_econsult_codes(facts(answered_at=REQUESTED - timedelta(seconds=1)))
    with pytest.raises(ValueError, match="0 or more"):
        propose_econsult_codes(facts(consultant(-1)))
    with pytest.raises(ValueError, match="timezone-aware"):
        turnaround(naive, ANSWERED)


# --- Properties ---------------------------------------------------------------------------------------

minutes_lists = st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=8)


@given(minutes_lists, st.booleans(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_consultant_code_follows_total_and_verbal_share(
    raw: list[tuple[int, bool]], discussion: bool, report: bool
) -> None:
    entries = tuple(consultant(m, verbal=v) for m, v in raw)
    proposal: EconsultProposal = propose_econsult_codes(
        facts(*entries, verbal_discussion=discussion, written_report=report)
    )
    total = sum(m for m, _ in raw)
    talk = sum(m for m, v in raw if v)
    code = proposal.consultant.code
    assert proposal.consultant.minutes == total
    if not report or total < 5:
        assert code is None
    elif discussion and talk * 2 > total:
        assert code in {
            CPT_ECONSULT_VERBAL_5_10,
            CPT_ECONSULT_VERBAL_11_20,
            CPT_ECONSULT_VERBAL_21_30,
            CPT_ECONSULT_VERBAL_31_PLUS,
        }
    else:
        assert code == CPT_ECONSULT_WRITTEN_5
    assert proposal.requester.code is None  # no requester time


@given(minutes_lists, st.booleans())
@settings(max_examples=200, deadline=None)
def test_a_blocking_condition_never_adds_a_code(raw: list[tuple[int, bool]], discussion: bool) -> None:
    entries = tuple(consultant(m, verbal=v) for m, v in raw)
    free = propose_econsult_codes(facts(*entries, verbal_discussion=discussion)).consultant
    for blocked in (
        facts(*entries, verbal_discussion=discussion, consent_recorded_at=None),
        facts(*entries, verbal_discussion=discussion, saw=(REQUESTED - timedelta(days=3),)),
        facts(*entries, verbal_discussion=discussion, after=(ANSWERED + timedelta(days=3),)),
        facts(*entries, verbal_discussion=discussion, prior_consultant=(ANSWERED - timedelta(days=3),)),
    ):
        proposal = propose_econsult_codes(blocked).consultant
        assert proposal.code is None
        assert proposal.minutes == free.minutes
        assert len(proposal.reasons) > len(free.reasons)


# --- Turnaround and due dates -------------------------------------------------------------------------


def test_turnaround_is_elapsed_time() -> None:
    assert turnaround(REQUESTED, ANSWERED) == timedelta(days=1)
    assert turnaround(REQUESTED, REQUESTED.astimezone(NY)) == timedelta(0)
    with pytest.raises(ValueError, match="before requested_at"):
        turnaround(ANSWERED, REQUESTED)


def test_urgent_consult_is_due_24_hours_later_even_over_a_weekend() -> None:
    friday_evening = datetime(2026, 11, 6, 18, tzinfo=NY)
    assert due_by(friday_evening, True, CAL) == datetime(2026, 11, 7, 23, tzinfo=UTC)


def test_routine_consult_is_due_in_3_business_days_across_a_weekend() -> None:
    thursday = datetime(2026, 11, 5, 10, tzinfo=NY)
    assert due_by(thursday, False, CAL) == datetime(2026, 11, 10, 10, tzinfo=NY)
    friday_evening = datetime(2026, 11, 6, 18, tzinfo=NY)  # the clock starts Monday 08:00
    assert due_by(friday_evening, False, CAL) == datetime(2026, 11, 12, 8, tzinfo=NY)
    assert due_by(thursday, False, CAL, routine_business_days=1) == datetime(2026, 11, 6, 10, tzinfo=NY)
    assert due_by(thursday, False, CAL).tzinfo is UTC


instants = st.datetimes(
    min_value=datetime(2026, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive; values are UTC below
    max_value=datetime(2027, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(instants)
@settings(max_examples=200, deadline=None)
def test_due_dates_are_after_the_request(requested: datetime) -> None:
    assert due_by(requested, True, CAL) - requested == timedelta(hours=24)
    assert due_by(requested, False, CAL) > requested
