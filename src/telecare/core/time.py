"""The one clock. Everything asks `utc_now()`; tests move it with `frozen_clock` / `advance_clock`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)
_frozen: datetime | None = None


def utc_now() -> datetime:
    if _frozen is not None:
        return _frozen
    return datetime.now(UTC) + _offset


def advance_clock(delta: timedelta) -> None:
    """Move the clock forward (tests and drills only)."""
    global _offset, _frozen
    if _frozen is not None:
        _frozen += delta
    else:
        _offset += delta


def freeze_clock(at: datetime | None) -> None:
    """Stop the clock at `at` (None resumes real time)."""
    global _frozen
    _frozen = at


def reset_clock() -> None:
    global _offset, _frozen
    _offset = timedelta(0)
    _frozen = None
