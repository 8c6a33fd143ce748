"""The licensure gate as a pure function: the named cases of issue 3 and properties over random inputs."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from telecare.licensure.compact_members import COMPACTS, NLC, PSYPACT
from telecare.licensure.rules import (
    Basis,
    CompactMembership,
    LicenceFact,
    MemberState,
    PrivilegeFact,
    authority_in,
    serviceable_states,
)

VISIT = date(2026, 12, 1)
YEAR = timedelta(days=365)


def lic(
    state: str, *, source: str = "state", issued: date | None = None, expires: date | None = None
) -> LicenceFact:
    return LicenceFact(state, "MD", source, issued or VISIT - YEAR, expires or VISIT + YEAR)


def priv(compact: str, home: str, *, expires: date | None = None) -> PrivilegeFact:
    return PrivilegeFact(compact, home, VISIT - YEAR, expires or VISIT + YEAR)


def test_own_state_licence_allows_that_state_only() -> None:
    ok = authority_in("PA", VISIT, [lic("PA")], [], COMPACTS)
    assert ok.authority is not None
    assert ok.authority.basis is Basis.STATE_LICENCE
    no = authority_in("NJ", VISIT, [lic("PA")], [], COMPACTS)
    assert no.authority is None
    assert no.reasons == ("No licence or compact privilege covers NJ.",)


def test_imlc_issued_licence_counts_as_a_state_licence() -> None:
    result = authority_in("CO", VISIT, [lic("PA"), lic("CO", source="imlc")], [], COMPACTS)
    assert result.authority is not None
    assert result.authority.basis is Basis.IMLC_LICENCE


def test_nlc_privilege_valid_in_member_state_not_in_non_member() -> None:
    nurse = [priv("nlc", "TX")]
    member = authority_in("FL", VISIT, [], nurse, COMPACTS)
    assert member.authority is not None
    assert member.authority.basis is Basis.NLC_PRIVILEGE
    assert member.authority.via_state == "TX"
    non_member = authority_in("CA", VISIT, [], nurse, COMPACTS)
    assert non_member.authority is None
    assert "CA is not a NLC member state (list as of 2026-02-01)." in non_member.reasons


def test_nlc_privilege_needs_a_home_state_that_issues_multistate_licences() -> None:
    result = authority_in("FL", VISIT, [], [priv("nlc", "CA")], COMPACTS)
    assert result.authority is None
    assert result.reasons == ("The NLC home state CA does not issue NLC authority.",)


def test_nlc_member_counts_only_from_its_effective_date() -> None:
    before = authority_in(
        "PA", date(2025, 7, 6), [], [PrivilegeFact("nlc", "TX", date(2025, 1, 1), date(2027, 1, 1))], COMPACTS
    )
    after = authority_in(
        "PA", date(2025, 7, 7), [], [PrivilegeFact("nlc", "TX", date(2025, 1, 1), date(2027, 1, 1))], COMPACTS
    )
    assert before.authority is None
    assert after.authority is not None


def test_psypact_apit_between_member_states_from_the_home_state() -> None:
    psychologist = [priv("psypact", "VA")]
    ok = authority_in("TX", VISIT, [], psychologist, COMPACTS)
    assert ok.authority is not None
    assert ok.authority.basis is Basis.PSYPACT_APIT
    assert authority_in("NY", VISIT, [], psychologist, COMPACTS).authority is None
    away = authority_in("TX", VISIT, [], psychologist, COMPACTS, practitioner_location="MD")
    assert away.authority is None
    assert away.reasons == ("PSYPACT requires practising from the home state VA.",)


def test_expired_licence_is_refused_with_the_date() -> None:
    result = authority_in("PA", VISIT, [lic("PA", expires=VISIT - timedelta(days=1))], [], COMPACTS)
    assert result.authority is None
    assert result.reasons == ("The PA licence expired on 2026-11-30.",)


def test_licence_valid_through_its_expiry_day() -> None:
    assert authority_in("PA", VISIT, [lic("PA", expires=VISIT)], [], COMPACTS).allowed


def test_licence_starting_tomorrow_is_refused_today_and_allowed_tomorrow() -> None:
    tomorrow = VISIT + timedelta(days=1)
    licences = [lic("PA", issued=tomorrow)]
    today = authority_in("PA", VISIT, licences, [], COMPACTS)
    assert today.authority is None
    assert today.reasons == ("The PA licence starts on 2026-12-02.",)
    assert authority_in("PA", tomorrow, licences, [], COMPACTS).allowed


def test_expired_compact_privilege_is_refused() -> None:
    result = authority_in("FL", VISIT, [], [priv("nlc", "TX", expires=VISIT - timedelta(days=1))], COMPACTS)
    assert result.authority is None
    assert result.reasons == ("The NLC privilege is not active on 2026-12-01.",)


def test_member_lists_carry_an_as_of_date_and_sources() -> None:
    for membership in (NLC, PSYPACT):
        assert membership.as_of <= date(2026, 11, 27)
        assert membership.sources
        assert len({m.state for m in membership.members}) == len(membership.members)
    assert NLC.member_on("MA", VISIT) is None  # enacted, implementation pending


STATES = st.sampled_from(["PA", "NJ", "NY", "TX", "FL", "CA", "VA", "CO", "WA", "MA"])
DATES = st.dates(min_value=date(2024, 1, 1), max_value=date(2028, 12, 31))


@st.composite
def licences(draw: st.DrawFn) -> LicenceFact:
    issued = draw(DATES)
    return LicenceFact(
        draw(STATES),
        "MD",
        draw(st.sampled_from(["state", "imlc"])),
        issued,
        issued + timedelta(days=draw(st.integers(0, 1200))),
    )


@st.composite
def privileges(draw: st.DrawFn) -> PrivilegeFact:
    issued = draw(DATES)
    return PrivilegeFact(
        draw(st.sampled_from(["nlc", "psypact"])),
        draw(STATES),
        issued,
        issued + timedelta(days=draw(st.integers(0, 1200))),
    )


@given(st.lists(licences(), max_size=4), STATES, DATES)
def test_property_licences_alone_allow_exactly_the_active_licence_states(
    lics: list[LicenceFact], state: str, on: date
) -> None:
    expected = any(x.state == state and x.issued_on <= on <= x.expires_on for x in lics)
    assert authority_in(state, on, lics, [], COMPACTS).allowed is expected


@given(st.lists(licences(), max_size=3), st.lists(privileges(), max_size=2), STATES, DATES)
def test_property_a_refusal_always_says_why_and_an_allowance_cites_an_active_credential(
    lics: list[LicenceFact], privs: list[PrivilegeFact], state: str, on: date
) -> None:
    result = authority_in(state, on, lics, privs, COMPACTS)
    if result.authority is None:
        assert result.reasons
    else:
        assert result.authority.state == state
        assert result.authority.expires_on >= on
        assert not result.reasons


@given(st.lists(licences(), max_size=3), st.lists(privileges(), max_size=2), STATES, DATES)
def test_property_compact_privileges_never_reach_beyond_member_states(
    lics: list[LicenceFact], privs: list[PrivilegeFact], state: str, on: date
) -> None:
    result = authority_in(state, on, lics, privs, COMPACTS)
    if result.authority is not None and result.authority.basis in (Basis.NLC_PRIVILEGE, Basis.PSYPACT_APIT):
        membership = COMPACTS[str(result.authority.basis).split("_")[0]]
        assert membership.member_on(state, on) is not None
        assert membership.member_on(result.authority.via_state, on) is not None


@given(st.lists(licences(), max_size=3), st.lists(privileges(), max_size=2), DATES)
def test_property_coverage_agrees_with_the_gate(
    lics: list[LicenceFact], privs: list[PrivilegeFact], on: date
) -> None:
    covered = serviceable_states(on, lics, privs, COMPACTS)
    for state in ["PA", "NJ", "NY", "TX", "FL", "CA", "VA", "CO", "WA", "MA", "OH"]:
        assert (state in covered) is authority_in(state, on, lics, privs, COMPACTS).allowed


@given(st.lists(licences(), max_size=3), STATES, DATES)
def test_property_removing_every_compact_member_leaves_only_licences(
    lics: list[LicenceFact], state: str, on: date
) -> None:
    empty = {
        "nlc": CompactMembership("nlc", on, ("test",), ()),
        "psypact": CompactMembership("psypact", on, ("test",), (MemberState("ZZ"),)),
    }
    with_compacts = authority_in(state, on, lics, [PrivilegeFact("nlc", "TX", on, on)], empty)
    assert with_compacts.allowed is authority_in(state, on, lics, [], COMPACTS).allowed
