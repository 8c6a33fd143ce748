"""Billing derivation for a signed telehealth visit (pure): E/M code by total time, place of service and
telehealth modifier. Every number here comes from docs/billing-visits.md with its source.

This proposes lines; a coordinator reviews and may adjust them with a reason (billing/service.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

# Office/outpatient E/M by total time on the date of the encounter. Since CPT 2024 each code has one
# threshold that "must be met or exceeded" (no ranges, no mid-point rule). docs/billing-visits.md#em-by-time;
# verified 2026-11-27 against AAPC Primary Care Coding Alert "Look toward office/outpatient time changes in
# 2024" (aapc.com, 99202 = 15 min met or exceeded), americanmedicalcoding.com "E/M changes for 2024" (table
# of 2023 ranges vs 2024 thresholds) and AAPC Pediatric Coding Alert reader question (99212 = 10 min).
# 99211 has no time component, so time alone never selects it.
EM_NEW_PATIENT: tuple[tuple[int, str], ...] = (
    (60, "99205"),  # Office/outpatient visit, new patient, high MDM or >= 60 min
    (45, "99204"),  # new patient, moderate MDM or >= 45 min
    (30, "99203"),  # new patient, low MDM or >= 30 min
    (15, "99202"),  # new patient, straightforward MDM or >= 15 min
)
EM_ESTABLISHED_PATIENT: tuple[tuple[int, str], ...] = (
    (40, "99215"),  # Office/outpatient visit, established patient, high MDM or >= 40 min
    (30, "99214"),  # established patient, moderate MDM or >= 30 min
    (20, "99213"),  # established patient, low MDM or >= 20 min
    (10, "99212"),  # established patient, straightforward MDM or >= 10 min
)

# Place of service (docs/billing-visits.md#place-of-service, CMS POS descriptors).
POS_TELEHEALTH_HOME = "10"  # Telehealth provided in the patient's home
POS_TELEHEALTH_OTHER = "02"  # Telehealth provided other than in the patient's home
POS_OFFICE = "11"  # Office: in-person visits (not telehealth) ⚠UV (docs/billing-visits.md#place-of-service)
# Modifiers (docs/billing-visits.md#modifiers, FCSO modifiers page).
MODIFIER_AUDIO_VIDEO = "95"  # Synchronous telemedicine via real-time interactive audio and video
MODIFIER_AUDIO_ONLY = "93"  # Synchronous telemedicine via telephone or other real-time audio-only system

# Reasons that satisfy the Medicare audio-only condition: the practitioner can do video and the patient
# cannot or does not consent to video (docs/billing-visits.md#audio-only, the permanent CY2025 rule). A
# connection that cannot carry video is the patient being unable to use video at that time.
AUDIO_ONLY_QUALIFYING_REASONS = frozenset(
    {"patient_lacks_video", "patient_declined_video", "connection_quality"}
)


@dataclass(frozen=True)
class TimelinePoint:
    at: datetime
    kind: str  # connected | modality_changed | disconnected | reconnected | ended
    to_modality: str | None = None


@dataclass(frozen=True)
class ModalityMinutes:
    video: float
    audio: float

    @property
    def switched(self) -> bool:
        return self.video > 0 and self.audio > 0


def connected_minutes(initial_modality: str, points: Sequence[TimelinePoint]) -> ModalityMinutes:
    """Minutes spent connected in each modality: from `connected` to `ended`, split at modality changes,
    without the time between a disconnection and the reconnection."""
    video = audio = 0.0
    modality = initial_modality
    since: datetime | None = None
    for p in sorted(points, key=lambda x: x.at):
        if since is not None and p.kind in ("modality_changed", "disconnected", "ended"):
            minutes = (p.at - since).total_seconds() / 60
            if modality == "video":
                video += minutes
            elif modality == "audio":
                audio += minutes
            since = p.at
        if p.kind == "modality_changed" and p.to_modality:
            modality = p.to_modality
        if p.kind in ("connected", "reconnected") and since is None:
            since = p.at
        if p.kind in ("disconnected", "ended"):
            since = None
    return ModalityMinutes(round(video, 2), round(audio, 2))


@dataclass(frozen=True)
class EncounterFacts:
    patient_kind: str  # new | established
    total_minutes: int  # practitioner's total time on the date of the encounter
    location_type: str | None  # home | other (attested at check-in); None for in-person visits
    booked_modality: str  # video | audio | in-person
    minutes: ModalityMinutes
    audio_only_reason: str | None = None
    practitioner_video_capable: bool | None = None


@dataclass(frozen=True)
class Derivation:
    cpt_code: str | None
    modifiers: tuple[str, ...]
    place_of_service: str
    rationale: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def em_code(patient_kind: str, total_minutes: int) -> str | None:
    table = EM_NEW_PATIENT if patient_kind == "new" else EM_ESTABLISHED_PATIENT
    for threshold, code in table:
        if total_minutes >= threshold:
            return code
    return None


def telehealth_modality(facts: EncounterFacts) -> str:
    """video or audio for billing. Booked audio-only, or video that never connected, is audio-only. After a
    mid-visit switch the modality that carried most of the connected time decides; a tie counts as
    audio-only, so audio-video (95) is claimed only when video carried most of the encounter. ⚠UV: no
    payer rule for switched visits was found (immedicaresolutions.com: "If video never connected, the
    encounter is modifier 93"); revisit with the MAC."""
    m = facts.minutes
    if m.video == 0 and m.audio == 0:
        return "audio" if facts.booked_modality == "audio" else "video"
    return "video" if m.video > m.audio else "audio"


def derive(facts: EncounterFacts) -> Derivation:
    rationale: list[str] = []
    warnings: list[str] = []
    code = em_code(facts.patient_kind, facts.total_minutes)
    table = EM_NEW_PATIENT if facts.patient_kind == "new" else EM_ESTABLISHED_PATIENT
    if code is None:
        lowest = table[-1]
        warnings.append(
            f"Total time {facts.total_minutes} min is below {lowest[0]} min ({lowest[1]}): no E/M code by "
            "time; choose one by medical decision making."
        )
    else:
        threshold = next(t for t, c in table if c == code)
        rationale.append(
            f"{code}: {facts.patient_kind} patient, total time {facts.total_minutes} min meets or exceeds "
            f"{threshold} min (CPT 2024+ single thresholds)."
        )
    if facts.booked_modality == "in-person":
        rationale.append(f"POS {POS_OFFICE}: in-person visit, not telehealth; no telehealth modifier.")
        return Derivation(code, (), POS_OFFICE, tuple(rationale), tuple(warnings))
    if facts.location_type == "home":
        pos = POS_TELEHEALTH_HOME
        rationale.append(f"POS {pos}: patient attested being at home.")
    else:
        pos = POS_TELEHEALTH_OTHER
        rationale.append(f"POS {pos}: patient attested being somewhere other than home.")
    modality = telehealth_modality(facts)
    m = facts.minutes
    if modality == "video":
        modifier = MODIFIER_AUDIO_VIDEO
        detail = f" ({m.video:g} min video, {m.audio:g} min audio-only after a switch)" if m.switched else ""
        rationale.append(f"Modifier {modifier}: real-time audio and video{detail}.")
    else:
        modifier = MODIFIER_AUDIO_ONLY
        detail = (
            f" ({m.audio:g} min audio-only, {m.video:g} min video before the switch)" if m.switched else ""
        )
        rationale.append(f"Modifier {modifier}: audio-only{detail}.")
        if facts.audio_only_reason not in AUDIO_ONLY_QUALIFYING_REASONS:
            warnings.append(
                "Audio-only without a documented reason the patient could not or would not use video."
            )
        if facts.practitioner_video_capable is not True:
            warnings.append("Audio-only requires that the practitioner was capable of video; not documented.")
    return Derivation(code, (modifier,), pos, tuple(rationale), tuple(warnings))
