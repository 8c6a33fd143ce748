"""Slot generation from weekly templates and exceptions, in the practitioner's time zone (pure functions).

Templates are wall-clock times, so a 09:00-12:00 Monday block stays 09:00-12:00 local across DST changes and
its UTC instants move. Local times that do not exist (the spring-forward gap) are skipped; ambiguous local
times (the repeated hour in autumn) use their first occurrence (fold=0). Durations are absolute (UTC)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class WeeklyBlock:
    weekday: int  # Monday = 0
    start: time
    end: time
    valid_from: date | None = None
    valid_until: date | None = None


@dataclass(frozen=True)
class DayException:
    on: date
    start: time | None = None  # None with end None: the whole day
    end: time | None = None


@dataclass(frozen=True)
class Interval:
    start: datetime  # UTC
    end: datetime


def local_to_utc(day: date, at: time, tz: ZoneInfo) -> datetime | None:
    """The UTC instant of a local wall-clock time, or None when that local time does not exist (DST gap)."""
    local = datetime.combine(day, at, tzinfo=tz).replace(fold=0)
    utc = local.astimezone(UTC)
    back = utc.astimezone(tz)
    if (back.date(), back.time().replace(tzinfo=None)) != (day, at):
        return None
    return utc


def _local_end_to_utc(day: date, at: time, tz: ZoneInfo) -> datetime:
    """End of a block: a non-existent local end time (in the gap) ends at the gap's start."""
    exact = local_to_utc(day, at, tz)
    if exact is not None:
        return exact
    # Inside the gap: wall-clock `at` maps past the jump; take the instant the gap begins.
    naive = datetime.combine(day, at)
    while True:
        naive -= timedelta(minutes=1)
        candidate = local_to_utc(naive.date(), naive.time(), tz)
        if candidate is not None:
            return candidate + timedelta(minutes=1)


def _blocked(exceptions: Sequence[DayException], day: date, tz: ZoneInfo) -> list[Interval]:
    out = []
    for ex in exceptions:
        if ex.on != day:
            continue
        if ex.start is None or ex.end is None:
            start = local_to_utc(day, time(0), tz) or _local_end_to_utc(day, time(0), tz)
            nxt = day + timedelta(days=1)
            end = local_to_utc(nxt, time(0), tz) or _local_end_to_utc(nxt, time(0), tz)
            out.append(Interval(start, end))
        else:
            out.append(Interval(_local_end_to_utc(day, ex.start, tz), _local_end_to_utc(day, ex.end, tz)))
    return out


def generate_slots(
    blocks: Iterable[WeeklyBlock],
    exceptions: Sequence[DayException],
    *,
    tz: ZoneInfo,
    first_day: date,
    last_day: date,
    duration: timedelta,
    step: timedelta,
    busy: Sequence[Interval] = (),
    not_before: datetime | None = None,
) -> list[Interval]:
    """Free slots of `duration`, starting every `step` of local wall-clock time from each block's start,
    that fit in the block, avoid exceptions and `busy` intervals, and start at or after `not_before`."""
    blocks = list(blocks)
    out: list[Interval] = []
    day = first_day
    while day <= last_day:
        blocked = _blocked(exceptions, day, tz) + list(busy)
        for block in blocks:
            if block.weekday != day.weekday():
                continue
            if block.valid_from is not None and day < block.valid_from:
                continue
            if block.valid_until is not None and day > block.valid_until:
                continue
            block_end = _local_end_to_utc(day, block.end, tz)
            cursor = datetime.combine(day, block.start)
            while cursor.date() == day:
                start = local_to_utc(day, cursor.time(), tz)
                cursor += step
                if start is None:
                    continue  # a wall-clock time skipped by the spring-forward change
                end = start + duration
                if end > block_end:
                    break
                if not_before is not None and start < not_before:
                    continue
                if any(b.start < end and start < b.end for b in blocked):
                    continue
                out.append(Interval(start, end))
        day += timedelta(days=1)
    out.sort(key=lambda i: i.start)
    # Two overlapping templates may offer the same slot twice.
    dedup: list[Interval] = []
    for slot in out:
        if not dedup or dedup[-1] != slot:
            dedup.append(slot)
    return dedup
