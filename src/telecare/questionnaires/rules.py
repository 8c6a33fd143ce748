"""Screening rules: severity bands of PHQ-9 and GAD-7 and the PHQ-9 item-9 safety rule
(docs/questionnaires.md#scoring, docs/questionnaires.md#item-9). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

PHQ9 = "phq-9"
GAD7 = "gad-7"
ITEM9 = "phq-9-9"
NOT_AT_ALL = "LA6568-5"
# The task an item-9 answer raises must be acknowledged within this time, or it escalates
# (docs/questionnaires.md#item-9; docs/caretasks.md#escalation).
ITEM9_ACK_WITHIN = timedelta(hours=1)
ITEM9_TASK_KIND = "phq9-item9"
ITEM9_TASK_TITLE = "PHQ-9 item 9 positive: same-day review and suicide-risk assessment"


@dataclass(frozen=True)
class Band:
    low: int
    high: int
    label: str


# docs/questionnaires.md#scoring: Kroenke, Spitzer & Williams 2001 (PHQ-9); Spitzer et al. 2006 (GAD-7).
BANDS: dict[str, tuple[Band, ...]] = {
    PHQ9: (
        Band(0, 4, "minimal"),
        Band(5, 9, "mild"),
        Band(10, 14, "moderate"),
        Band(15, 19, "moderately severe"),
        Band(20, 27, "severe"),
    ),
    GAD7: (Band(0, 4, "minimal"), Band(5, 9, "mild"), Band(10, 14, "moderate"), Band(15, 21, "severe")),
}
# A total at or above this is a positive screen (docs/questionnaires.md#scoring).
POSITIVE_AT = {PHQ9: 10, GAD7: 10}


def band(slug: str, total: int) -> str | None:
    for b in BANDS.get(slug, ()):
        if b.low <= total <= b.high:
            return b.label
    return None


def item9_positive(slug: str, answers: dict[str, Any]) -> bool:
    """Any PHQ-9 item-9 answer above "not at all", whatever the total and whether or not the rest is
    answered (docs/questionnaires.md#item-9). No setting is consulted: this cannot be switched off."""
    if slug != PHQ9:
        return False
    answer = answers.get(ITEM9)
    return answer is not None and answer != NOT_AT_ALL
