"""The clinical side of monitoring: RPM enrolment, per-patient alert thresholds, alert acknowledgement
and resolution, and logged interactive time."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.audit.models import AuditAction
from telecare.auth.principal import Principal
from telecare.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Practitioner, Role, User
from telecare.monitoring import alerts as alert_engine
from telecare.monitoring.models import (
    Alert,
    AlertStatus,
    RpmEnrolment,
    ThresholdOverride,
    TimeEntry,
)
from telecare.monitoring.rules import DEFAULT_RULES, RULES_BY_CODE, effective_rule
from telecare.monitoring.schemas import (
    EnrolmentCreate,
    OverrideSet,
    RuleRead,
    TimeEntryCreate,
)
from telecare.monitoring.service import AlertClosed, NoActiveEnrolment

# ---- enrolment ---------------------------------------------------------------------------------------------


async def active_enrolment(session: AsyncSession, patient_id: int) -> RpmEnrolment | None:
    return (
        (
            await session.execute(
                select(RpmEnrolment)
                .where(RpmEnrolment.patient_id == patient_id, RpmEnrolment.ended_on.is_(None))
                .order_by(RpmEnrolment.id.desc())
            )
        )
        .scalars()
        .first()
    )


async def enrol_patient(
    session: AsyncSession, principal: Principal, *, patient_id: int, data: EnrolmentCreate
) -> RpmEnrolment:
    """Enrol in RPM with consent and the ordering practitioner; this starts the 99453 set-up episode."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_ENROLMENT, action=Action.CREATE
    )
    ordering = (
        await session.execute(
            select(Practitioner, User)
            .join(User, User.id == Practitioner.user_id)
            .where(Practitioner.id == data.ordering_practitioner_id, Practitioner.org_id == principal.org_id)
        )
    ).first()
    if ordering is None or ordering[1].role != Role.PHYSICIAN:
        raise ValidationFailed(
            errors=[FieldError("ordering_practitioner_id", "not a physician of this organization")]
        )
    if await active_enrolment(session, patient_id) is not None:
        raise Conflict("The patient is already enrolled.")
    enrolment = RpmEnrolment(
        org_id=principal.org_id,
        patient_id=patient_id,
        ordering_practitioner_id=data.ordering_practitioner_id,
        programs=[str(p) for p in data.programs],
        consent_at=data.consent_at,
        consent_method=data.consent_method,
        consent_recorded_by_user_id=principal.user_id,
        started_on=data.started_on or utc_now().date(),
    )
    session.add(enrolment)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.RPM_ENROLMENT,
        action=Action.CREATE,
        patient_id=patient_id,
        resource_id=enrolment.id,
        detail={"programs": enrolment.programs, "consent_method": data.consent_method},
    )
    return enrolment


async def end_enrolment(
    session: AsyncSession, principal: Principal, *, patient_id: int, on: date
) -> RpmEnrolment:
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_ENROLMENT, action=Action.UPDATE
    )
    enrolment = await active_enrolment(session, patient_id)
    if enrolment is None:
        raise NoActiveEnrolment()
    enrolment.ended_on = on
    return enrolment


# ---- rules and overrides -----------------------------------------------------------------------------------


async def patient_rules(session: AsyncSession, principal: Principal, *, patient_id: int) -> list[RuleRead]:
    """The rules as they apply to the patient now (defaults, program, override)."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_TARGET, action=Action.READ
    )
    ctx = (await alert_engine.load_patient_rules(session, [patient_id]))[patient_id]
    now = utc_now()
    out = []
    for base in DEFAULT_RULES:
        rule, override = effective_rule(base, ctx.programs, ctx.overrides, now)
        out.append(
            RuleRead(
                code=rule.code,
                title=rule.title,
                tier=rule.tier,
                kinds=sorted(str(k) for k in rule.kinds),
                params=rule.params,
                confirm_minutes=rule.confirm_minutes,
                enabled=rule.enabled,
                source=rule.source,
                overridden=override is not None,
                override_reason=override.reason if override else None,
                override_by_user_id=override.set_by_user_id if override else None,
            )
        )
    return out


async def set_override(
    session: AsyncSession, principal: Principal, *, patient_id: int, rule_code: str, data: OverrideSet
) -> ThresholdOverride:
    """Change a rule for one patient from now on; the previous version stays for readings measured before."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_TARGET, action=Action.UPDATE, audit_access=False
    )
    rule = RULES_BY_CODE.get(rule_code)
    if rule is None:
        raise NotFound("No such rule.")
    unknown = sorted(set(data.params) - set(rule.params))
    if unknown:
        raise ValidationFailed(
            errors=[FieldError(f"params.{k}", f"not a parameter of {rule_code}") for k in unknown]
        )
    now = utc_now()
    await session.execute(
        update(ThresholdOverride)
        .where(
            ThresholdOverride.patient_id == patient_id,
            ThresholdOverride.rule_code == rule_code,
            ThresholdOverride.effective_to.is_(None),
        )
        .values(effective_to=now)
    )
    override = ThresholdOverride(
        org_id=principal.org_id,
        patient_id=patient_id,
        rule_code=rule_code,
        params=dict(data.params),
        confirm_minutes=data.confirm_minutes,
        enabled=data.enabled,
        reason=data.reason,
        set_by_user_id=principal.user_id,
        effective_from=now,
    )
    session.add(override)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.RPM_TARGET,
        action=Action.UPDATE,
        patient_id=patient_id,
        resource_id=override.id,
        detail={
            "rule": rule_code,
            "params": override.params,
            "confirm_minutes": data.confirm_minutes,
            "enabled": data.enabled,
            "reason": data.reason,
        },
    )
    return override


# ---- alerts ------------------------------------------------------------------------------------------------


async def get_alert(session: AsyncSession, principal: Principal, *, alert_id: int, action: Action) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None or alert.org_id != principal.org_id:
        # A role without the grant hears 403 whatever the id (as for the alerts of its own organization),
        # so that 404 versus 403 does not tell it which ids belong to its organization.
        access.reach_for(principal, Resource.RPM_ALERT, action)
        raise NotFound("No such alert.")
    await access.open_patient(
        session, principal, alert.patient_id, resource=Resource.RPM_ALERT, action=action, resource_id=alert_id
    )
    return alert


async def acknowledge_alert(
    session: AsyncSession, principal: Principal, *, alert_id: int, note: str
) -> Alert:
    """The nurse has seen the alert and acts on it: stops the escalation clock."""
    alert = await get_alert(session, principal, alert_id=alert_id, action=Action.UPDATE)
    if alert.status == AlertStatus.RESOLVED:
        raise AlertClosed()
    if alert.status == AlertStatus.OPEN:
        alert.status = AlertStatus.ACKNOWLEDGED
        alert.acknowledged_at = utc_now()
        alert.acknowledged_by_user_id = principal.user_id
        alert.ack_note = note
        alert_engine.publish_alert(session, alert, "acknowledged")
    return alert


async def resolve_alert(session: AsyncSession, principal: Principal, *, alert_id: int, note: str) -> Alert:
    alert = await get_alert(session, principal, alert_id=alert_id, action=Action.UPDATE)
    if alert.status == AlertStatus.RESOLVED:
        raise AlertClosed()
    now = utc_now()
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by_user_id = now, principal.user_id
    alert.status = AlertStatus.RESOLVED
    alert.resolved_at = now
    alert.resolved_by_user_id = principal.user_id
    alert.resolution_note = note
    alert.open_key = None
    alert_engine.publish_alert(session, alert, "resolved")
    return alert


async def patient_alerts(
    session: AsyncSession, principal: Principal, *, patient_id: int, include_resolved: bool = True
) -> list[Alert]:
    await access.open_patient(session, principal, patient_id, resource=Resource.RPM_ALERT, action=Action.READ)
    stmt = select(Alert).where(Alert.patient_id == patient_id)
    if not include_resolved:
        stmt = stmt.where(alert_engine.not_resolved())
    return list((await session.execute(stmt.order_by(Alert.created_at.desc()))).scalars())


# ---- time tracking -----------------------------------------------------------------------------------------


async def log_time(
    session: AsyncSession, principal: Principal, *, patient_id: int, data: TimeEntryCreate
) -> TimeEntry:
    """Interactive communication or management minutes against the patient's RPM episode."""
    await access.open_patient(
        session, principal, patient_id, resource=Resource.RPM_TIME, action=Action.CREATE, audit_access=False
    )
    enrolment = await active_enrolment(session, patient_id)
    if enrolment is None:
        raise NoActiveEnrolment()
    if data.kind == "interpretation" and not rules.logs_interpretation(principal):
        raise ValidationFailed(
            errors=[FieldError("kind", "interpretation time (99091) is logged by a physician")]
        )
    entry = TimeEntry(
        org_id=principal.org_id,
        patient_id=patient_id,
        enrolment_id=enrolment.id,
        user_id=principal.user_id,
        kind=data.kind,
        minutes=data.minutes,
        performed_at=data.performed_at or utc_now(),
        note=data.note,
    )
    session.add(entry)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=Resource.RPM_TIME,
        action=AuditAction.CREATE,
        patient_id=patient_id,
        resource_id=entry.id,
        detail={"kind": str(data.kind), "minutes": data.minutes},
    )
    return entry
