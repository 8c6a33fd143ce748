"""Slot generation in the practitioner's zone, across DST changes (pure)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from telecare.scheduling.slots import DayException, Interval, WeeklyBlock, generate_slots

NY = ZoneInfo("America/New_York")
HALF_HOUR = timedelta(minutes=30)


def slots_on(
    day: date, block: WeeklyBlock, exceptions: list[DayException] | None = None, **kw: object
) -> list[Interval]:
    return generate_slots(
        [block],
        exceptions or [],
        tz=NY,
        first_day=day,
        last_day=day,
        duration=HALF_HOUR,
        step=HALF_HOUR,
        **kw,
    )  # type: ignore[arg-type]


def test_nine_am_local_is_a_different_utc_hour_before_and_after_the_spring_change() -> None:
    # DST began in the US on Sunday 8 March 2026.
    before = slots_on(date(2026, 3, 6), WeeklyBlock(4, time(9), time(10)))
    after = slots_on(date(2026, 3, 9), WeeklyBlock(0, time(9), time(10)))
    assert [s.start for s in before] == [
        datetime(2026, 3, 6, 14, 0, tzinfo=UTC),
        datetime(2026, 3, 6, 14, 30, tzinfo=UTC),
    ]
    assert [s.start for s in after] == [
        datetime(2026, 3, 9, 13, 0, tzinfo=UTC),
        datetime(2026, 3, 9, 13, 30, tzinfo=UTC),
    ]


def test_the_skipped_hour_offers_no_slots_and_durations_stay_absolute() -> None:
    slots = slots_on(date(2026, 3, 8), WeeklyBlock(6, time(1), time(4)))
    # 02:00-02:59 local does not exist; 1:30 EST + 30 min = 3:00 EDT.
    assert [s.start.astimezone(NY).strftime("%H:%M") for s in slots] == ["01:00", "01:30", "03:00", "03:30"]
    assert all(s.end - s.start == HALF_HOUR for s in slots)


def test_the_repeated_autumn_hour_is_offered_once() -> None:
    # DST ended on Sunday 1 November 2026: 01:00-01:59 happens twice.
    slots = slots_on(date(2026, 11, 1), WeeklyBlock(6, time(0, 30), time(2)))
    starts = [s.start for s in slots]
    assert len(starts) == len(set(starts))
    assert starts[0] == datetime(2026, 11, 1, 4, 30, tzinfo=UTC)  # 00:30 EDT
    assert starts[-1] - starts[0] >= timedelta(hours=1)


def test_holiday_and_blocked_time_remove_slots() -> None:
    day = date(2026, 12, 2)
    block = WeeklyBlock(2, time(9), time(12))
    assert slots_on(day, block, [DayException(day)]) == []
    partial = slots_on(day, block, [DayException(day, time(10), time(11))])
    assert [s.start.astimezone(NY).strftime("%H:%M") for s in partial] == ["09:00", "09:30", "11:00", "11:30"]


def test_busy_intervals_and_not_before_remove_slots() -> None:
    day = date(2026, 12, 2)
    busy = [Interval(datetime(2026, 12, 2, 14, 15, tzinfo=UTC), datetime(2026, 12, 2, 14, 45, tzinfo=UTC))]
    slots = slots_on(
        day, WeeklyBlock(2, time(9), time(11)), busy=busy, not_before=datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
    )
    assert [s.start.astimezone(NY).strftime("%H:%M") for s in slots] == ["10:00", "10:30"]


@given(
    st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31)),
    st.integers(0, 20),
    st.integers(1, 16),
    st.sampled_from(["America/New_York", "America/Phoenix", "Europe/London", "Australia/Lord_Howe", "UTC"]),
)
def test_property_slots_fit_their_local_block_and_never_overlap(
    day: date, start_hour_x2: int, length_x30: int, zone: str
) -> None:
    tz = ZoneInfo(zone)
    start = time(start_hour_x2 // 2 + 1, 30 * (start_hour_x2 % 2))
    end_minutes = min(start.hour * 60 + start.minute + 30 * length_x30, 23 * 60 + 59)
    end = time(end_minutes // 60, end_minutes % 60)
    slots = generate_slots(
        [WeeklyBlock(day.weekday(), start, end)],
        [],
        tz=tz,
        first_day=day,
        last_day=day,
        duration=HALF_HOUR,
        step=HALF_HOUR,
    )
    for a, b in itertools.pairwise(slots):
        assert a.end <= b.start
    for s in slots:
        local = s.start.astimezone(tz)
        assert local.date() == day
        assert start <= local.time() < end
        assert s.end - s.start == HALF_HOUR
