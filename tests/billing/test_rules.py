"""Billing derivation (pure): E/M time band edges, POS home vs other, modifier by modality and switches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telecare.billing.rules import (
    EncounterFacts,
    ModalityMinutes,
    TimelinePoint,
    connected_minutes,
    derive,
    em_code,
)

T0 = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)


def facts(**kw: object) -> EncounterFacts:
    base: dict[str, object] = {
        "patient_kind": "established",
        "total_minutes": 25,
        "location_type": "home",
        "booked_modality": "video",
        "minutes": ModalityMinutes(20, 0),
        "audio_only_reason": None,
        "practitioner_video_capable": True,
    }
    base.update(kw)
    return EncounterFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "minutes", "code"),
    [
        ("new", 14, None),
        ("new", 15, "99202"),
        ("new", 29, "99202"),
        ("new", 30, "99203"),
        ("new", 44, "99203"),
        ("new", 45, "99204"),
        ("new", 59, "99204"),
        ("new", 60, "99205"),
        ("new", 240, "99205"),
        ("established", 9, None),
        ("established", 10, "99212"),
        ("established", 19, "99212"),
        ("established", 20, "99213"),
        ("established", 29, "99213"),
        ("established", 30, "99214"),
        ("established", 39, "99214"),
        ("established", 40, "99215"),
        ("established", 180, "99215"),
    ],
)
def test_each_em_time_band_edge(kind: str, minutes: int, code: str | None) -> None:
    assert em_code(kind, minutes) == code
    assert derive(facts(patient_kind=kind, total_minutes=minutes)).cpt_code == code


def test_below_the_lowest_threshold_no_code_and_a_warning() -> None:
    result = derive(facts(total_minutes=9))
    assert result.cpt_code is None
    assert "below 10 min (99212)" in result.warnings[0]


def test_home_is_pos_10_and_elsewhere_is_pos_02() -> None:
    assert derive(facts(location_type="home")).place_of_service == "10"
    assert derive(facts(location_type="other")).place_of_service == "02"


def test_video_is_95_and_audio_only_is_93() -> None:
    video = derive(facts())
    assert video.modifiers == ("95",)
    assert video.warnings == ()
    audio = derive(
        facts(
            booked_modality="audio", minutes=ModalityMinutes(0, 20), audio_only_reason="patient_lacks_video"
        )
    )
    assert audio.modifiers == ("93",)
    assert audio.warnings == ()


def test_audio_only_without_the_medicare_conditions_is_flagged() -> None:
    result = derive(
        facts(booked_modality="audio", minutes=ModalityMinutes(0, 20), practitioner_video_capable=None)
    )
    assert result.modifiers == ("93",)
    assert len(result.warnings) == 2


def test_video_that_never_connected_for_a_booked_audio_visit_is_93() -> None:
    assert derive(
        facts(
            booked_modality="audio", minutes=ModalityMinutes(0, 0), audio_only_reason="patient_declined_video"
        )
    ).modifiers == ("93",)


def test_switched_mid_visit_the_modality_carrying_most_of_the_time_decides() -> None:
    mostly_video = derive(facts(minutes=ModalityMinutes(15, 5), audio_only_reason="connection_quality"))
    assert mostly_video.modifiers == ("95",)
    assert "15 min video, 5 min audio-only" in mostly_video.rationale[-1]
    mostly_audio = derive(facts(minutes=ModalityMinutes(5, 15), audio_only_reason="connection_quality"))
    assert mostly_audio.modifiers == ("93",)
    assert "15 min audio-only, 5 min video" in mostly_audio.rationale[-1]
    tie = derive(facts(minutes=ModalityMinutes(10, 10), audio_only_reason="connection_quality"))
    assert tie.modifiers == ("93",)


def test_in_person_visits_get_office_pos_and_no_telehealth_modifier() -> None:
    result = derive(facts(booked_modality="in-person", location_type=None, minutes=ModalityMinutes(0, 0)))
    assert result.place_of_service == "11"
    assert result.modifiers == ()


def test_connected_minutes_split_at_switches_and_skip_disconnections() -> None:
    points = [
        TimelinePoint(T0, "connected"),
        TimelinePoint(T0 + timedelta(minutes=1), "connected"),  # the other side joining changes nothing
        TimelinePoint(T0 + timedelta(minutes=8), "modality_changed", "audio"),
        TimelinePoint(T0 + timedelta(minutes=10), "disconnected"),
        TimelinePoint(T0 + timedelta(minutes=13), "reconnected"),
        TimelinePoint(T0 + timedelta(minutes=20), "modality_changed", "video"),
        TimelinePoint(T0 + timedelta(minutes=25), "ended"),
    ]
    assert connected_minutes("video", points) == ModalityMinutes(13, 9)


@given(st.integers(0, 600), st.sampled_from(["new", "established"]))
def test_property_more_time_never_gives_a_lower_code(minutes: int, kind: str) -> None:
    here, later = em_code(kind, minutes), em_code(kind, minutes + 1)
    assert (here or "0") <= (later or "0")


@given(st.floats(0, 120), st.floats(0, 120), st.sampled_from(["home", "other"]))
def test_property_exactly_one_telehealth_modifier_and_a_telehealth_pos(
    video: float, audio: float, where: str
) -> None:
    result = derive(facts(minutes=ModalityMinutes(video, audio), location_type=where))
    assert len(result.modifiers) == 1
    assert result.modifiers[0] in ("93", "95")
    assert result.place_of_service == ("10" if where == "home" else "02")
