"""Authorization-matrix probes for the virtual-visit resource types (Schedule, Appointment, Encounter,
VisitNote, BillingLine, Survey, ConsentText): the visits part of the matrix world, the record each case acts
on, and how each action is performed over the REST API (see tests/access/matrix_kit.py).

The world (added once per backend): in each organization every practitioner is licensed in the patients'
state and has weekday availability; a visit type and a consent text; completed visits with signed notes,
proposed billing lines and survey answers for the own patient (with the physician) and, in organization A,
for the unrelated patient (with the bystander physician); and in organization A a completed visit with a
draft note for each clinical role with the own patient. Visits create care relationships
(scheduling.repository.visit_patients), so a visit only ever pairs a patient with a practitioner who is on
that patient's care team already: the foundation's expectations (who reaches whom) stay true.

Writes that consume their record (cancel, check-in, admit, survey) act on a fresh appointment the probe
inserts for the target's patient and practitioner, and which it cancels afterwards."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update

from telecare.access.policy import Action, Resource
from telecare.billing.models import BillingLine
from telecare.core.time import utc_now
from telecare.identity.models import Practitioner, Role
from telecare.scheduling.models import (
    Appointment,
    AppointmentStatus,
    AvailabilityException,
    AvailabilityTemplate,
    Modality,
    PatientKind,
    VisitType,
)
from telecare.visits import notes
from telecare.visits.models import (
    CheckInAttestation,
    ConsentAcceptance,
    ConsentText,
    LocationType,
    ParticipantRole,
    SurveyResponse,
    VisitEvent,
    VisitEventKind,
    VisitNote,
    VisitParticipant,
)
from telecare.visits.schemas import NoteUpdate
from tests.access.matrix_kit import (
    CLINICAL,
    Caller,
    Outcome,
    Party,
    PatientRec,
    Rel,
    Target,
    World,
    absent,
    body_of,
    ids_in,
    next_case,
    probe,
    targets,
    world_setup,
)
from tests.factories import Account, add_license, setup_uow
from tests.visit_factories import principal_of

SC, AP, EN, VN, BL, SV, CO = (
    Resource.SCHEDULE,
    Resource.APPOINTMENT,
    Resource.VISIT,
    Resource.VISIT_NOTE,
    Resource.BILLING_LINE,
    Resource.SURVEY,
    Resource.CONSENT_TEXT,
)
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1"
TZ = ZoneInfo("America/New_York")  # every world practitioner's zone (the Practitioner default)
_slot_seq = itertools.count()  # bookable slots handed to the booking probe
_fresh_seq = itertools.count(1)  # distinct start instants of the probes' fresh appointments


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


@dataclass
class Visit:
    id: int  # the appointment (= encounter) id
    patient: PatientRec
    practitioner_id: int
    start_at: datetime
    markers: tuple[str, ...] = ()  # note text and attested location: clinical content of this visit
    line_id: int | None = None  # its proposed billing line, once the note is signed


@dataclass
class OrgVisits:
    visit_type_id: int
    coordinator_user_id: int
    signed: Visit  # own patient with the physician: signed note, billing line, survey
    other: Visit | None = None  # unrelated patient with the bystander (org A only): the same
    drafts: dict[Role, Visit] = field(default_factory=dict)  # org A: own patient with each clinical role


def _v(world: World) -> dict[str, OrgVisits]:
    return world.extra["visits"]  # type: ignore[no-any-return]


def _party_for(world: World, rel: Rel) -> Party:
    return world.b if rel is Rel.OTHER_ORG else world.a


# ---- the world ---------------------------------------------------------------------------------------------


def _note(token: str) -> NoteUpdate:
    """A complete telehealth note (docs/documentation.md#required-elements) whose clinical text carries
    `token`."""
    return NoteUpdate(
        provider_location_type="site",
        provider_city="Burlington",
        provider_state="VT",
        identity_verified=True,
        identity_method="photo ID shown on camera",
        history=f"History {token}: follow-up of hypertension.",
        exam="Well appearing, speaking full sentences.",
        exam_limitations="No auscultation or palpation possible remotely.",
        assessment=f"Assessment {token}: hypertension, controlled.",
        plan=f"Plan {token}: continue lisinopril.",
        in_person_followup="In-person visit in 6 months.",
        total_minutes=25,
        patient_summary=f"Summary {token}: keep taking your medicine.",
    )


async def _completed_visit(
    world: World,
    org: OrgVisits,
    party: Party,
    patient: PatientRec,
    doctor: Account,
    start: datetime,
    *,
    sign: bool,
) -> Visit:
    """A video visit that happened: check-in (attested location, accepted consent), admission, connection
    and end are recorded as the visit services record them; the note is written (and signed, which
    proposes the billing line) through `telecare.visits.notes` as the visit's clinician."""
    assert doctor.practitioner_id is not None
    patient_user = party.accounts[Role.PATIENT].user_id if patient.id == party.own.id else None
    attester = patient_user or org.coordinator_user_id  # a patient without a login checks in by phone
    async with setup_uow(world.db) as s:
        consent = (
            (
                await s.execute(
                    select(ConsentText)
                    .where(ConsentText.org_id == party.org_id)
                    .order_by(ConsentText.version)
                )
            )
            .scalars()
            .first()
        )
        assert consent is not None
        appt = Appointment(
            org_id=party.org_id,
            patient_id=patient.id,
            practitioner_id=doctor.practitioner_id,
            visit_type_id=org.visit_type_id,
            start_at=start,
            end_at=start + timedelta(minutes=30),
            modality=Modality.VIDEO,
            booked_modality=Modality.VIDEO,
            status=AppointmentStatus.COMPLETED,
            expected_state=patient.state,
            booked_by_user_id=org.coordinator_user_id,
        )
        s.add(appt)
        await s.flush()
        city = f"Attestedcity{appt.id}x"
        s.add(
            CheckInAttestation(
                appointment_id=appt.id,
                patient_id=patient.id,
                location_type=LocationType.HOME,
                address_line="1 Main St",
                city=city,
                state=patient.state,
                attested_by_user_id=attester,
                attested_at=start - timedelta(minutes=5),
            )
        )
        s.add(
            ConsentAcceptance(
                appointment_id=appt.id,
                patient_id=patient.id,
                consent_text_id=consent.id,
                version=consent.version,
                accepted_by_user_id=attester,
                accepted_at=start - timedelta(minutes=5),
            )
        )
        pat = VisitParticipant(
            appointment_id=appt.id, role=ParticipantRole.PATIENT, user_id=patient_user, display_name="Patient"
        )
        doc = VisitParticipant(
            appointment_id=appt.id,
            role=ParticipantRole.PRACTITIONER,
            user_id=doctor.user_id,
            display_name="Clinician",
            joined_at=start,
        )
        s.add_all([pat, doc])
        await s.flush()
        for kind, at, who in (
            (VisitEventKind.CHECKED_IN, start - timedelta(minutes=5), pat),
            (VisitEventKind.ADMITTED, start, doc),
            (VisitEventKind.CONNECTED, start, doc),
            (VisitEventKind.ENDED, start + timedelta(minutes=20), None),
        ):
            s.add(
                VisitEvent(
                    appointment_id=appt.id,
                    kind=kind,
                    at=at,
                    actor_user_id=doctor.user_id if who is not pat else attester,
                    participant_id=who.id if who is not None else None,
                )
            )
        appt_id = appt.id
    token = f"Clinicalmark{appt_id}x"
    async with world.db.unit_of_work() as s:  # actions: audited, so guarded
        await notes.update_note(s, principal_of(doctor), appointment_id=appt_id, data=_note(token))
        if sign:
            await notes.sign_note(s, principal_of(doctor), appointment_id=appt_id)
    visit = Visit(appt_id, patient, doctor.practitioner_id, start, (token, city))
    if sign:
        async with setup_uow(world.db) as s:
            s.add(
                SurveyResponse(
                    org_id=party.org_id,
                    appointment_id=appt_id,
                    patient_id=patient.id,
                    rating=4,
                    would_recommend=True,
                    comment=f"Surveycomment{appt_id}x",
                )
            )
            visit.line_id = (
                await s.execute(select(BillingLine.id).where(BillingLine.appointment_id == appt_id))
            ).scalar_one()
        visit.markers = (*visit.markers, f"Surveycomment{appt_id}x")
    return visit


@world_setup
async def _visits_world(world: World) -> None:
    world.extra["visits"] = {}
    # Completed visits a few days ago, on the hour, one hour apart (distinct instants per practitioner).
    past = utc_now().replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    hours = itertools.count()
    for tag, party in (("a", world.a), ("b", world.b)):
        state = party.own.state
        async with setup_uow(world.db) as s:
            pracs = list(
                (
                    await s.execute(select(Practitioner.id).where(Practitioner.org_id == party.org_id))
                ).scalars()
            )
            org_name = f"{party.markers[0]}"  # the organization's tag, e.g. Alphawood
            vt = VisitType(
                org_id=party.org_id,
                name="Follow-up",
                duration_minutes=30,
                modalities=[Modality.VIDEO, Modality.AUDIO],
                patient_kind=PatientKind.ESTABLISHED,
            )
            s.add(vt)
            s.add(
                ConsentText(
                    org_id=party.org_id,
                    version=1,
                    title=f"{org_name} telehealth consent",
                    body=f"{org_name}: I agree to receive care by video or telephone and know its limits.",
                )
            )
            for prac in pracs:  # every weekday 09:00-17:00 New York time
                s.add_all(
                    AvailabilityTemplate(
                        org_id=party.org_id,
                        practitioner_id=prac,
                        weekday=day,
                        start_time=time(9),
                        end_time=time(17),
                    )
                    for day in range(7)
                )
            await s.flush()
            vt_id = vt.id
        for prac in pracs:
            await add_license(world.db, practitioner_id=prac, org_id=party.org_id, state=state)
        coordinator = party.accounts[Role.COORDINATOR].user_id
        physician = party.accounts[Role.PHYSICIAN]
        placeholder = Visit(0, party.own, 0, past)
        org = OrgVisits(vt_id, coordinator, placeholder)
        org.signed = await _completed_visit(
            world, org, party, party.own, physician, past + timedelta(hours=next(hours)), sign=True
        )
        if tag == "a":
            org.other = await _completed_visit(
                world,
                org,
                party,
                party.other,
                party.bystander,
                past + timedelta(hours=next(hours)),
                sign=True,
            )
            for role in CLINICAL:
                org.drafts[role] = await _completed_visit(
                    world,
                    org,
                    party,
                    party.own,
                    party.accounts[role],
                    past + timedelta(hours=next(hours)),
                    sign=False,
                )
        _v(world)[tag] = org


# ---- fresh appointments for the probes that consume one ------------------------------------------------


async def _fresh(world: World, t: Target, *, status: AppointmentStatus, start: datetime | None = None) -> int:
    """Insert an appointment of the target's patient with the target's practitioner (a pair that already
    has a care relationship) in `status`, at an instant no other appointment of the world uses."""
    n = next(_fresh_seq)
    org = t.data["org"]
    at = (start or datetime(2031, 1, 6, 14, tzinfo=UTC)) + timedelta(seconds=n)
    async with setup_uow(world.db) as s:
        appt = Appointment(
            org_id=t.data["org_id"],
            patient_id=t.patient_id,
            practitioner_id=t.data["practitioner_id"],
            visit_type_id=org.visit_type_id,
            start_at=at,
            end_at=at + timedelta(minutes=30),
            modality=Modality.VIDEO,
            booked_modality=Modality.VIDEO,
            status=status,
            expected_state=t.data["state"],
            booked_by_user_id=org.coordinator_user_id,
        )
        s.add(appt)
        await s.flush()
        return appt.id


async def _status(world: World, appointment_id: int) -> AppointmentStatus:
    async with setup_uow(world.db) as s:
        value = (
            await s.execute(select(Appointment.status).where(Appointment.id == appointment_id))
        ).scalar_one()
    return AppointmentStatus(value)


async def _retire(world: World, appointment_id: int) -> None:
    """Cancel a probe's appointment so that it holds no time and forms no relationship afterwards."""
    async with setup_uow(world.db) as s:
        await s.execute(
            update(Appointment)
            .where(Appointment.id == appointment_id)
            .values(status=AppointmentStatus.CANCELLED, cancelled_at=utc_now(), cancel_reason="matrix probe")
        )


# ---- targets ----------------------------------------------------------------------------------------------


def _visit_target(world: World, visit: Visit, *, org_id: int, org: OrgVisits, line: bool = False) -> Target:
    return Target(
        visit.line_id if line else visit.id,
        visit.patient.id,
        (*visit.patient.markers, *visit.markers),
        {
            "appointment_id": visit.id,
            "practitioner_id": visit.practitioner_id,
            "start_at": visit.start_at,
            "org_id": org_id,
            "org": org,
            "state": visit.patient.state,
        },
    )


def _signed_visit(world: World, rel: Rel) -> Target:
    """OWN: the own patient's signed visit with the physician; SAME_ORG: the unrelated patient's with the
    bystander; OTHER_ORG: organization B's own patient's."""
    a, b = _v(world)["a"], _v(world)["b"]
    if rel is Rel.OWN:
        return _visit_target(world, a.signed, org_id=world.a.org_id, org=a)
    if rel is Rel.SAME_ORG:
        assert a.other is not None
        return _visit_target(world, a.other, org_id=world.a.org_id, org=a)
    return _visit_target(world, b.signed, org_id=world.b.org_id, org=b)


def _assigned_visit(world: World, caller: Caller, rel: Rel) -> Target:
    """As `_signed_visit`, except that a clinician's own visit is one they are the clinician of (only the
    visit's clinician admits, ends or writes the note: "own or assigned")."""
    if rel is Rel.OWN and caller.role in CLINICAL:
        a = _v(world)["a"]
        return _visit_target(world, a.drafts[caller.role], org_id=world.a.org_id, org=a)
    return _signed_visit(world, rel)


@targets(AP)
async def _appointment_target(world: World, caller: Caller, rel: Rel) -> Target:
    return _signed_visit(world, rel)


@targets(SV)
async def _survey_target(world: World, caller: Caller, rel: Rel) -> Target:
    return _signed_visit(world, rel)


@targets(EN)
async def _encounter_target(world: World, caller: Caller, rel: Rel) -> Target:
    return _assigned_visit(world, caller, rel)


@targets(VN)
async def _note_target(world: World, caller: Caller, rel: Rel) -> Target:
    return _assigned_visit(world, caller, rel)


@targets(BL)
async def _line_target(world: World, caller: Caller, rel: Rel) -> Target:
    t = _signed_visit(world, rel)
    a, b = _v(world)["a"], _v(world)["b"]
    visit = {Rel.OWN: a.signed, Rel.SAME_ORG: a.other, Rel.OTHER_ORG: b.signed}[rel]
    assert visit is not None
    return Target(visit.line_id, t.patient_id, t.markers, t.data)


@targets(SC)
async def _schedule_target(world: World, caller: Caller, rel: Rel) -> Target:
    """A practitioner's availability: the caller's own (or the spare nurse's for callers who are not
    practitioners), the bystander's, organization B's bystander's."""
    if rel is Rel.OWN:
        acc = caller.account if caller.account and caller.account.practitioner_id else world.a.spare
    else:
        acc = _party_for(world, rel).bystander
    return Target(acc.practitioner_id, data={"org_id": acc.org_id})


@targets(CO)
async def _consent_target(world: World, caller: Caller, rel: Rel) -> Target:
    """The organization's current consent text (OWN and SAME_ORG: organization A's; OTHER_ORG: B's)."""
    party = _party_for(world, rel)
    async with setup_uow(world.db) as s:
        row = (
            await s.execute(
                select(ConsentText.id, ConsentText.body)
                .where(ConsentText.org_id == party.org_id)
                .order_by(ConsentText.version.desc())
                .limit(1)
            )
        ).one()
    return Target(row.id, markers=(row.body,), data={"org_id": party.org_id})


# ---- Schedule ---------------------------------------------------------------------------------------------


@probe(SC, R)
async def _availability_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/practitioners/{t.id}/availability", headers=caller.headers)
    body = body_of(r)
    return Outcome(r, _ok(r) and t.id in ids_in(body.get("templates"), "practitioner_id"))


@probe(SC, S, collection=True)
async def _slot_search(world: World, caller: Caller, t: Target) -> Outcome:
    # Tomorrow's free slots of the target practitioner for a patient in Vermont: another organization's
    # practitioner is not offered (and not named).
    tomorrow = (utc_now().astimezone(TZ) + timedelta(days=1)).date()
    r = await world.client.get(
        f"{API}/slots",
        params={
            "visit_type_id": _v(world)["a"].visit_type_id,
            "state": world.a.own.state,
            "from": tomorrow.isoformat(),
            "days": 1,
            "practitioner_id": t.id,
        },
        headers=caller.headers,
    )
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r).get("slots"), "practitioner_id"))


@probe(SC, C)
async def _exception_create(world: World, caller: Caller, t: Target) -> Outcome:
    # Blocked time far beyond every date the other probes book.
    label = f"Matrix block {next_case()}"
    body = {
        "practitioner_id": t.id,
        "on_date": "2032-03-03",
        "start_time": "12:00:00",
        "end_time": "12:30:00",
        "kind": "blocked",
        "label": label,
    }
    r = await world.client.post(f"{API}/availability/exceptions", json=body, headers=caller.headers)
    async with setup_uow(world.db) as s:
        made = (
            await s.execute(select(AvailabilityException.id).where(AvailabilityException.label == label))
        ).first() is not None
    return Outcome(r, _ok(r) and body_of(r).get("practitioner_id") == t.id, made)


_NO_EDIT = (
    "availability blocks (templates, exceptions) are added but not yet edited or removed over the API; the "
    "organization's rules (PUT /scheduling/policy) are not one practitioner's schedule (UNEXPOSED_GRANTS)"
)
absent(SC, UPD, "PATCH", "/api/v1/availability/templates/{id}", reason=_NO_EDIT)
absent(SC, D, "DELETE", "/api/v1/availability/exceptions/{id}", reason=_NO_EDIT)
absent(SC, E, "GET", "/api/v1/practitioners/{id}/availability/$export", reason="not patient data; no grant")

# ---- Appointment ------------------------------------------------------------------------------------------


@probe(AP, R)
async def _appointment_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/appointments/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(AP, S, collection=True)
async def _calendar_search(world: World, caller: Caller, t: Target) -> Outcome:
    # The calendar of the target visit's practitioner on the visit's local day (the coordinators' view,
    # patient names included): visits outside the caller's reach are not listed.
    day = t.data["start_at"].astimezone(TZ).date()
    r = await world.client.get(
        f"{API}/calendar",
        params={"day": day.isoformat(), "practitioner_id": t.data["practitioner_id"]},
        headers=caller.headers,
    )
    body = body_of(r)
    listed = {e.get("id") for d in body for e in d.get("entries", [])} if _ok(r) else set()
    return Outcome(r, t.id in listed)


def _next_bookable() -> datetime:
    """A free slot of every world practitioner: 09:00-16:30 New York time, 30 minutes apart, on days from
    three weeks ahead (each handed out once)."""
    n = next(_slot_seq)
    day = (utc_now().astimezone(TZ) + timedelta(days=21 + n // 16)).date()
    local = datetime.combine(day, time(9), tzinfo=TZ) + timedelta(minutes=30 * (n % 16))
    return local.astimezone(UTC)


@probe(AP, C)
async def _appointment_book(world: World, caller: Caller, t: Target) -> Outcome:
    start = _next_bookable()
    body = {
        "practitioner_id": t.data["practitioner_id"],
        "visit_type_id": _v(world)["a"].visit_type_id,
        "start_at": start.isoformat(),
        "modality": "video",
        "expected_state": t.data["state"],
        "patient_id": t.patient_id,
    }
    r = await world.client.post(f"{API}/appointments", json=body, headers=caller.headers)
    async with setup_uow(world.db) as s:
        made = (
            await s.execute(
                select(Appointment.id).where(
                    Appointment.patient_id == t.patient_id,
                    Appointment.start_at == start,
                    Appointment.status == AppointmentStatus.BOOKED,
                )
            )
        ).scalar_one_or_none()
    if made is not None:
        await _retire(world, made)
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, made is not None)


@probe(AP, UPD)
async def _appointment_cancel(world: World, caller: Caller, t: Target) -> Outcome:
    fresh = await _fresh(world, t, status=AppointmentStatus.BOOKED)
    r = await world.client.post(
        f"{API}/appointments/{fresh}/cancel", json={"reason": "matrix probe"}, headers=caller.headers
    )
    cancelled = await _status(world, fresh) is AppointmentStatus.CANCELLED
    await _retire(world, fresh)
    return Outcome(r, _ok(r) and body_of(r).get("id") == fresh, cancelled)


absent(AP, D, "DELETE", "/api/v1/appointments/{id}", reason="cancelled (an update), never deleted; no grant")
absent(AP, E, "GET", "/api/v1/appointments/{id}/$export", reason="exported with the patient; no grant")

# ---- Encounter --------------------------------------------------------------------------------------------


@probe(EN, R)
async def _timeline_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/visits/{t.id}/timeline", headers=caller.headers)
    body = body_of(r)
    return Outcome(r, _ok(r) and "ended" in {e.get("kind") for e in body})


@probe(EN, UPD)
async def _visit_step(world: World, caller: Caller, t: Target) -> Outcome:
    """The step of the visit each side takes: the patient checks in (attests location, accepts consent) to
    a visit starting soon; everyone else tries to admit a checked-in patient."""
    if caller.role is Role.PATIENT:
        fresh = await _fresh(
            world, t, status=AppointmentStatus.BOOKED, start=utc_now() + timedelta(minutes=10)
        )
        async with setup_uow(world.db) as s:
            consent = (
                await s.execute(
                    select(func.max(ConsentText.id)).where(ConsentText.org_id == t.data["org_id"])
                )
            ).scalar_one()
        r = await world.client.post(
            f"{API}/visits/{fresh}/check-in",
            json={
                "location_type": "home",
                "address_line": "2 Elm St",
                "city": "Montpelier",
                "state": t.data["state"],
                "consent_text_id": consent,
                "consent_accepted": True,
            },
            headers=caller.headers,
        )
        wanted = AppointmentStatus.CHECKED_IN
    else:
        fresh = await _fresh(world, t, status=AppointmentStatus.CHECKED_IN)
        r = await world.client.post(f"{API}/visits/{fresh}/admit", headers=caller.headers)
        wanted = AppointmentStatus.IN_PROGRESS
    moved = await _status(world, fresh) is wanted
    await _retire(world, fresh)
    return Outcome(r, _ok(r) and body_of(r).get("appointment_id") == fresh, moved)


absent(
    EN,
    S,
    "GET",
    "/api/v1/visits",
    reason="the encounter searches are the clinician's waiting-room queue (WebSocket /ws/visits/queue and "
    "the /visits page) and the calendar (probed as Appointment search); no REST route (UNEXPOSED_GRANTS)",
)
_BOOKED = "an encounter is the appointment once the patient checks in: created by booking, never deleted"
absent(EN, C, "POST", "/api/v1/visits", reason=_BOOKED)
absent(EN, D, "DELETE", "/api/v1/visits/{id}", reason=_BOOKED)
absent(EN, E, "GET", "/api/v1/visits/{id}/$export", reason="exported with the patient; no grant")

# ---- VisitNote --------------------------------------------------------------------------------------------


@probe(VN, R)
async def _note_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/visits/{t.id}/note", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("appointment_id") == t.id)


@probe(VN, UPD)
async def _note_update(world: World, caller: Caller, t: Target) -> Outcome:
    text = f"Probe edit {next_case()}"
    r = await world.client.patch(
        f"{API}/visits/{t.id}/note", json={"technical_issues": text}, headers=caller.headers
    )
    async with setup_uow(world.db) as s:
        stored = (
            await s.execute(select(VisitNote.technical_issues).where(VisitNote.appointment_id == t.id))
        ).scalar_one_or_none()
    return Outcome(r, _ok(r) and body_of(r).get("appointment_id") == t.id, stored == text)


absent(
    VN,
    C,
    "POST",
    "/api/v1/visits/{id}/note",
    reason="the draft is created when the visit's clinician first opens GET /visits/{id}/note (authorised "
    "as a read, then as authorship); no create route (UNEXPOSED_GRANTS)",
)
absent(VN, S, "GET", "/api/v1/visit-notes", reason="notes are opened per visit; no search (UNEXPOSED_GRANTS)")
absent(VN, D, "DELETE", "/api/v1/visits/{id}/note", reason="signed notes are corrected by addenda; no grant")
absent(VN, E, "GET", "/api/v1/visits/{id}/note/$export", reason="exported with the patient; no grant")

# ---- BillingLine ------------------------------------------------------------------------------------------


@probe(BL, R)
async def _visit_lines(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/visits/{t.data['appointment_id']}/billing", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(BL, S, collection=True)
async def _review_lines(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/billing/lines", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(BL, UPD)
async def _line_adjust(world: World, caller: Caller, t: Target) -> Outcome:
    # Change the code only, so the line stays proposed (in the review list) for the cases that follow.
    async with setup_uow(world.db) as s:
        current = (await s.execute(select(BillingLine.cpt_code).where(BillingLine.id == t.id))).scalar_one()
    code = "99214" if current != "99214" else "99213"
    r = await world.client.patch(
        f"{API}/billing/lines/{t.id}",
        json={"reason": f"matrix probe {next_case()}", "cpt_code": code},
        headers=caller.headers,
    )
    async with setup_uow(world.db) as s:
        stored = (await s.execute(select(BillingLine.cpt_code).where(BillingLine.id == t.id))).scalar_one()
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id, stored == code)


absent(BL, C, "POST", "/api/v1/billing/lines", reason="proposed by signing the note; no grant")
absent(BL, D, "DELETE", "/api/v1/billing/lines/{id}", reason="voided (an update), never deleted; no grant")
absent(BL, E, "GET", "/api/v1/billing/lines/$export", reason="no claims export yet; no grant")

# ---- Survey -----------------------------------------------------------------------------------------------


@probe(SV, C)
async def _survey_answer(world: World, caller: Caller, t: Target) -> Outcome:
    fresh = await _fresh(
        world, t, status=AppointmentStatus.COMPLETED, start=datetime(2026, 1, 5, 15, tzinfo=UTC)
    )
    comment = f"Probe survey {next_case()}"
    r = await world.client.post(
        f"{API}/visits/{fresh}/survey",
        json={"rating": 5, "would_recommend": True, "comment": comment},
        headers=caller.headers,
    )
    async with setup_uow(world.db) as s:
        made = (
            await s.execute(select(SurveyResponse.id).where(SurveyResponse.appointment_id == fresh))
        ).first() is not None
    await _retire(world, fresh)
    return Outcome(r, _ok(r) and isinstance(body_of(r).get("id"), int), made)


_UNREAD = (
    "answers come back only as `survey_done` on the visit summary and in the patient's export; no REST "
    "read or search of answers yet (UNEXPOSED_GRANTS)"
)
absent(SV, R, "GET", "/api/v1/visits/{id}/survey", reason=_UNREAD)
absent(SV, S, "GET", "/api/v1/surveys", reason=_UNREAD)
_ONCE = "a survey is answered once and kept as given; no grant"
absent(SV, UPD, "PATCH", "/api/v1/visits/{id}/survey", reason=_ONCE)
absent(SV, D, "DELETE", "/api/v1/visits/{id}/survey", reason=_ONCE)
absent(SV, E, "GET", "/api/v1/surveys/$export", reason="exported with the patient; no grant")

# ---- ConsentText ------------------------------------------------------------------------------------------


# The current text has no id in its path: another organization's text can only be absent from the answer,
# so the probe is a collection (filtered, not refused).
@probe(CO, R, collection=True)
async def _consent_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/consent/current", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(CO, C)
async def _consent_publish(world: World, caller: Caller, t: Target) -> Outcome:
    title = f"Consent version {next_case()}"
    body: dict[str, Any] = {"title": title, "body": "I agree to receive care by video or by telephone."}
    if t.data["org_id"] != world.a.org_id:
        body["org_id"] = t.data["org_id"]  # mass assignment into another organization
    r = await world.client.post(f"{API}/consent", json=body, headers=caller.headers)
    async with setup_uow(world.db) as s:
        made = (await s.execute(select(ConsentText.id).where(ConsentText.title == title))).first() is not None
    return Outcome(r, _ok(r) and body_of(r).get("title") == title, made)


absent(
    CO,
    S,
    "GET",
    "/api/v1/consent",
    reason="admins publish versions but cannot list them yet (UNEXPOSED_GRANTS)",
)
_VERSIONED = "consent texts are versioned: a change is a new version (create), never an edit; no grant"
absent(CO, UPD, "PATCH", "/api/v1/consent/{id}", reason=_VERSIONED)
absent(CO, D, "DELETE", "/api/v1/consent/{id}", reason=_VERSIONED)
absent(CO, E, "GET", "/api/v1/consent/$export", reason="not patient data; no grant")
