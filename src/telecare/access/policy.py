"""The one policy table: for each resource type, which role may do which action on which relationship.

Deny by default: a (resource, role, action) not listed is forbidden. The authorization matrix test is
generated from this table. Minimum necessary (45 CFR 164.502(b)): coordinators get scheduling and contact
data, never clinical content; informatics gets aggregates; admins manage users and settings, not clinical
content. Clinical roles reach a patient through a care relationship (care team, a visit, or a live
break-the-glass grant).
"""

from __future__ import annotations

import enum

from telecare.identity.models import Role


class Action(enum.StrEnum):
    READ = "read"
    SEARCH = "search"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    EXPORT = "export"


# SMART v2 permission letters per action; export needs read and search on the token (`.rs`).
SCOPE_LETTER = {
    Action.READ: "r",
    Action.SEARCH: "s",
    Action.CREATE: "c",
    Action.UPDATE: "u",
    Action.DELETE: "d",
    Action.EXPORT: "r",
}


class Reach(enum.StrEnum):
    """How far a grant reaches."""

    OWN = "own"  # the patient's own compartment, or the user's own record
    CARE = "care"  # patients with a care relationship (care team, visit, break-the-glass)
    ORG = "org"  # anything in the caller's organization


class Resource(enum.StrEnum):
    PATIENT = "Patient"  # demographics and contact data
    CARE_TEAM = "CareTeam"
    PRACTITIONER = "Practitioner"
    USER = "User"
    API_TOKEN = "ApiToken"  # noqa: S105 - a resource name
    AUDIT_EVENT = "AuditEvent"
    AGGREGATE = "Aggregate"  # de-identified counts for informatics dashboards
    BREAK_GLASS = "BreakGlass"
    # Virtual visits (issue 3)
    SCHEDULE = "Schedule"  # visit types, availability templates and exceptions, slots: no patient data
    APPOINTMENT = "Appointment"  # who sees whom when; scheduling data
    VISIT = "Encounter"  # the visit itself: check-in, attestation, consent, timeline, participants, joining
    VISIT_NOTE = "VisitNote"  # clinical documentation and the patient's visit summary
    BILLING_LINE = "BillingLine"  # proposed and adjusted E/M lines
    SURVEY = "Survey"  # post-visit satisfaction survey
    CONSENT_TEXT = "ConsentText"  # the organization's telehealth consent versions
    # Remote patient monitoring (monitoring/)
    OBSERVATION = "Observation"  # device and manual readings
    DEVICE = "Device"  # monitors and their assignment to patients
    DEVICE_KEY = "DeviceKey"  # credentials of gateways and vendor integrations
    RPM_ENROLMENT = "EpisodeOfCare"  # RPM enrolment with consent and ordering practitioner
    RPM_ALERT = "Flag"  # threshold alerts, acknowledgement and resolution
    RPM_TARGET = "Goal"  # per-patient threshold overrides
    RPM_TIME = "RpmTime"  # logged interactive communication and management minutes
    RPM_BILLING = "RpmBilling"  # the monthly RPM billing worklist
    # Stored files (files/): photos and documents of a patient, attached to messages, skin cases, ...
    BINARY = "Binary"
    # Asynchronous care (messaging/)
    INBOX = "Inbox"  # team inboxes and their members: no patient data
    COMMUNICATION = "Communication"  # message threads, messages, read state, logged time
    CONSULT_QUEUE = "ConsultQueue"  # specialty e-consult queues and their specialists: no patient data
    ECONSULT = "ServiceRequest"  # interprofessional e-consults: request, conversation, answer, time
    SKIN_CASE = "Media"  # store-and-forward dermatology: skin cases, their photos and the answer
    # Screening, triage and education (issue 10)
    QUESTIONNAIRE_RESPONSE = "QuestionnaireResponse"  # assigned questionnaires, answers, derived scores
    CARE_TASK = "Task"  # care-team tasks: the PHQ-9 item-9 safety task, triage call-backs
    EDUCATION = "EducationAssignment"  # articles given to a patient and the record of their reading
    TRIAGE = "TriageEncounter"  # nurse triage and patient self-triage: location, answers, disposition, SBAR


# Resources whose records belong to one patient (the patient compartment).
PATIENT_COMPARTMENT = frozenset(
    {
        Resource.PATIENT,
        Resource.CARE_TEAM,
        Resource.APPOINTMENT,
        Resource.VISIT,
        Resource.VISIT_NOTE,
        Resource.BILLING_LINE,
        Resource.SURVEY,
        Resource.OBSERVATION,
        Resource.DEVICE,
        Resource.RPM_ENROLMENT,
        Resource.RPM_ALERT,
        Resource.RPM_TARGET,
        Resource.RPM_TIME,
        Resource.RPM_BILLING,
        Resource.BINARY,
        Resource.COMMUNICATION,
        Resource.ECONSULT,
        Resource.SKIN_CASE,
        Resource.QUESTIONNAIRE_RESPONSE,
        Resource.CARE_TASK,
        Resource.EDUCATION,
        Resource.TRIAGE,
    }
)

R, S, C, U, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
CLINICIANS = (Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST)
STAFF = (*CLINICIANS, Role.COORDINATOR, Role.INFORMATICS, Role.ADMIN)


def _grant(roles: tuple[Role, ...], reach: Reach, *actions: Action) -> dict[Role, dict[Action, Reach]]:
    return {role: dict.fromkeys(actions, reach) for role in roles}


def _merge(*parts: dict[Role, dict[Action, Reach]]) -> dict[Role, dict[Action, Reach]]:
    out: dict[Role, dict[Action, Reach]] = {}
    for part in parts:
        for role, actions in part.items():
            out.setdefault(role, {}).update(actions)
    return out


POLICY: dict[Resource, dict[Role, dict[Action, Reach]]] = {
    Resource.PATIENT: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, U, E),
        _grant(CLINICIANS, Reach.CARE, R, S, U, E),
        _grant((Role.COORDINATOR,), Reach.ORG, R, S, C, U),
    ),
    Resource.CARE_TEAM: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R),
        _grant(CLINICIANS, Reach.CARE, R),
        _grant((Role.COORDINATOR,), Reach.ORG, R, C, D),
    ),
    Resource.PRACTITIONER: _merge(
        _grant(STAFF, Reach.ORG, R, S),
        _grant((Role.ADMIN,), Reach.ORG, R, S, C, U),
    ),
    Resource.USER: _merge(
        _grant((Role.PATIENT, *STAFF), Reach.OWN, R),
        _grant((Role.ADMIN,), Reach.ORG, R, S, C, U),
    ),
    Resource.API_TOKEN: _merge(
        _grant((Role.ADMIN,), Reach.ORG, R, S, C, D),
    ),
    Resource.AUDIT_EVENT: _merge(
        _grant((Role.PATIENT,), Reach.OWN, S),  # accounting of who accessed my record
        _grant((Role.ADMIN,), Reach.ORG, S, E),
    ),
    Resource.AGGREGATE: _merge(
        _grant((Role.INFORMATICS, Role.ADMIN, Role.COORDINATOR), Reach.ORG, R),
    ),
    Resource.BREAK_GLASS: _merge(
        _grant(CLINICIANS, Reach.ORG, C),
        _grant((Role.ADMIN,), Reach.ORG, S),  # privacy review of emergency accesses
    ),
    # Virtual visits. Coordinators book and run the calendar, see check-in/licensure state and review
    # billing, but never read clinical notes (minimum necessary).
    Resource.SCHEDULE: _merge(
        _grant((Role.PATIENT, *STAFF), Reach.ORG, R, S),
        _grant((Role.COORDINATOR, Role.ADMIN), Reach.ORG, R, S, C, U, D),
        _grant(CLINICIANS, Reach.OWN, C, U, D),  # their own availability
    ),
    Resource.APPOINTMENT: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, S, C, U),
        _grant(CLINICIANS, Reach.CARE, R, S, U),
        _grant((Role.COORDINATOR,), Reach.ORG, R, S, C, U),
    ),
    Resource.VISIT: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, U),  # check in, attest, consent, join, leave
        _grant(CLINICIANS, Reach.CARE, R, S, U),  # queue, admit, switch modality, end
        _grant((Role.COORDINATOR,), Reach.ORG, R, S),  # status and licensure flags, no clinical content
    ),
    Resource.VISIT_NOTE: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R),  # the visit summary of a signed note
        _grant(CLINICIANS, Reach.CARE, R, S, C, U),
    ),
    Resource.BILLING_LINE: _merge(
        _grant(CLINICIANS, Reach.CARE, R, S),
        _grant((Role.COORDINATOR,), Reach.ORG, R, S, U),
    ),
    Resource.SURVEY: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, C),
        _grant(CLINICIANS, Reach.CARE, R),
        _grant((Role.COORDINATOR,), Reach.ORG, R, S),
    ),
    Resource.CONSENT_TEXT: _merge(
        _grant((Role.PATIENT, *STAFF), Reach.ORG, R),
        _grant((Role.ADMIN,), Reach.ORG, R, S, C),
    ),
    # Remote patient monitoring. Patients read their own readings and targets and enter manual readings;
    # clinicians act through the care relationship; coordinators handle device logistics and keys only.
    Resource.OBSERVATION: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, S, C),
        _grant(CLINICIANS, Reach.CARE, R, S, C),
    ),
    Resource.DEVICE: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R),
        _grant(CLINICIANS, Reach.CARE, R, S, C, U),
        _grant((Role.COORDINATOR,), Reach.ORG, R, S, C, U),
    ),
    Resource.DEVICE_KEY: _merge(
        _grant((Role.COORDINATOR, Role.ADMIN), Reach.ORG, R, S, C, D),
    ),
    Resource.RPM_ENROLMENT: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R),
        _grant((Role.PHYSICIAN, Role.NURSE), Reach.CARE, R, S, C, U),
    ),
    Resource.RPM_ALERT: _merge(
        _grant((Role.PHYSICIAN, Role.NURSE), Reach.CARE, R, S, U),
    ),
    Resource.RPM_TARGET: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R),
        _grant((Role.PHYSICIAN, Role.NURSE), Reach.CARE, R, S, C, U),
    ),
    Resource.RPM_TIME: _merge(
        _grant((Role.PHYSICIAN, Role.NURSE), Reach.CARE, R, S, C),
    ),
    Resource.RPM_BILLING: _merge(
        _grant((Role.PHYSICIAN, Role.NURSE), Reach.CARE, R, S),
    ),
    # Stored files are clinical content (photos of a rash, a referral letter): the patient and the
    # clinicians caring for them upload, attach (update) and open them; coordinators and admins do not
    # (minimum necessary). Files are not listed on their own: the record they belong to lists them.
    Resource.BINARY: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, C, U),
        _grant(CLINICIANS, Reach.CARE, R, C, U),
    ),
    # Secure messaging. Patients message the teams of their organization; clinicians reach a thread through
    # the care relationship, which a thread in an inbox they belong to creates (messaging.repository).
    # Coordinators run inboxes (membership, targets) and see response-time figures, not message content.
    Resource.INBOX: _merge(
        _grant((Role.PATIENT, *STAFF), Reach.ORG, R, S),
        _grant((Role.COORDINATOR, Role.ADMIN), Reach.ORG, R, S, C, U),
    ),
    Resource.COMMUNICATION: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, S, C, U),
        _grant(CLINICIANS, Reach.CARE, R, S, C, U),
    ),
    # E-consults are between clinicians: the requester reaches the patient through their care relationship,
    # specialists through the queue they belong to (econsult.service.queue_patients). The answer is part of
    # the chart; the patient reads it through their clinician and in their export, not in the portal.
    Resource.CONSULT_QUEUE: _merge(
        _grant(STAFF, Reach.ORG, R, S),
        _grant((Role.COORDINATOR, Role.ADMIN), Reach.ORG, R, S, C, U),
    ),
    Resource.ECONSULT: _merge(
        _grant(CLINICIANS, Reach.CARE, R, S, C, U),
    ),
    # Store-and-forward dermatology. The patient submits a skin concern, reads the answer and adds photos
    # when asked; clinicians caring for the patient submit and add photos too. Dermatologists reach the
    # patient through the dermatology queue (dermatology.service.queue_patients); answering is for them
    # alone (a service rule on top of the update grant).
    Resource.SKIN_CASE: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, S, C, U),
        _grant(CLINICIANS, Reach.CARE, R, S, C, U),
    ),
    # Questionnaires. Patients answer their own (create a response, save answers as they go) and read
    # their history; clinicians caring for the patient assign them (create), read answers and scores and
    # follow trends. Coordinators see nothing of it: answers are behavioural-health content.
    Resource.QUESTIONNAIRE_RESPONSE: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, S, C, U),
        _grant(CLINICIANS, Reach.CARE, R, S, C, U),
    ),
    # Care-team tasks are raised by the system (a PHQ-9 item-9 answer) or by clinicians; clinicians
    # caring for the patient list, acknowledge and complete them. A task names the patient, so it is
    # theirs alone; the patient is told what to do on the screen, not through the task.
    Resource.CARE_TASK: _merge(
        _grant(CLINICIANS, Reach.CARE, R, S, C, U),
    ),
    # Education assignments. Clinicians caring for the patient give articles (create) and see what was
    # read; the patient lists and reads their own and records that they read one (update: the reading
    # record is theirs alone to write). Which article a patient was given says something about their
    # health, so coordinators see none of it.
    Resource.EDUCATION: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, S, U),
        _grant(CLINICIANS, Reach.CARE, R, S, C),
    ),
    # Triage. The patient triages themselves before booking (create, answer: update) and reads their own;
    # clinicians caring for the patient read the outcome. Running a nurse triage (create, answer, sign
    # the SBAR note) is for nurses and physicians (docs/triage.md#nurse-triage); coordinators see nothing.
    Resource.TRIAGE: _merge(
        _grant((Role.PATIENT,), Reach.OWN, R, S, C, U),
        _grant(CLINICIANS, Reach.CARE, R, S),
        _grant((Role.PHYSICIAN, Role.NURSE), Reach.CARE, R, S, C, U),
    ),
}


def allowed_reach(role: Role, resource: Resource, action: Action) -> Reach | None:
    return POLICY.get(resource, {}).get(role, {}).get(action)


_REACH_ORDER = {Reach.OWN: 0, Reach.CARE: 1, Reach.ORG: 2}


def role_covers(holder: Role, other: Role) -> bool:
    """True when `holder` has every grant `other` has, at least as wide (OWN < CARE < ORG).

    A credential may only be handed out by someone whose own grants cover it: otherwise an admin could mint
    a clinician's API token and read clinical data through it (minimum necessary, OWASP API5)."""
    for resource, roles in POLICY.items():
        for action, reach in roles.get(other, {}).items():
            mine = allowed_reach(holder, resource, action)
            if mine is None or _REACH_ORDER[mine] < _REACH_ORDER[reach]:
                return False
    return True
