"""The rule engine and the alert lifecycle: evaluation of new readings (as of their measured time), one open
alert per patient and rule, acknowledgement and resolution with notes, escalation after the tier deadline,
and the after-commit push to nurse dashboards."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.core.db import after_commit, as_uow
from telecare.core.time import utc_now
from telecare.monitoring.codes import Kind
from telecare.monitoring.models import (
    Alert,
    AlertReading,
    AlertStatus,
    Reading,
    RpmEnrolment,
    ThresholdOverride,
    Tier,
)
from telecare.monitoring.rules import (
    DEFAULT_RULES,
    MISSING_DATA,
    RULES_BY_CODE,
    TIER_DEADLINE,
    OverrideVersion,
    Rule,
    effective_rule,
    threshold_hit,
    weight_gain_hit,
)

if TYPE_CHECKING:
    from telecare.core.events import EventBus
    from telecare.monitoring.ingest import Candidate

ALERT_TOPIC = "rpm.alert"


def event_bus(session: AsyncSession) -> EventBus | None:
    return as_uow(session).events


def publish_alert(session: AsyncSession, alert: Alert, change: str) -> None:
    """After commit, tell open dashboards (a summary; each socket forwards it only to readers in scope)."""
    bus = event_bus(session)
    if bus is None:
        return
    # The payload stays inside the deployment (in-process queue or PostgreSQL NOTIFY); dashboards forward
    # it only to readers whose scope includes the patient.
    payload: dict[str, Any] = {
        "alert_id": alert.id,
        "org_id": alert.org_id,
        "patient_id": alert.patient_id,
        "change": change,
        "rule_code": alert.rule_code,
        "tier": str(alert.tier),
        "status": str(alert.status),
        "title": alert.title,
        "detail": alert.detail,
        "created_at": alert.created_at.isoformat() if alert.created_at else None,
        "deadline_at": alert.deadline_at.isoformat() if alert.deadline_at else None,
        "escalated": alert.escalated_at is not None,
    }

    async def stamp() -> None:
        # Runs right after commit, before delivery: lets dashboards (and bench/ingest.py) measure latency.
        payload["committed_at"] = time.time()

    after_commit(session, stamp)
    bus.publish(session, ALERT_TOPIC, payload)


@dataclass
class PatientRules:
    programs: list[str]
    overrides: list[OverrideVersion]
    _cache: dict[tuple[str, int], Rule] = field(default_factory=dict)

    def rule(self, rule: Rule, at: datetime) -> Rule:
        """The rule in force at `at`, cached per override version (a batch asks thousands of times)."""
        version = -1
        for n, o in enumerate(self.overrides):
            if (
                o.rule_code == rule.code
                and o.effective_from <= at
                and (o.effective_to is None or at < o.effective_to)
            ):
                version = n
        key = (rule.code, version)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = effective_rule(rule, self.programs, self.overrides, at)[0]
        return found


async def load_patient_rules(session: AsyncSession, patient_ids: Sequence[int]) -> dict[int, PatientRules]:
    out = {pid: PatientRules([], []) for pid in patient_ids}
    enrolments = await session.execute(
        select(RpmEnrolment.patient_id, RpmEnrolment.programs).where(
            RpmEnrolment.patient_id.in_(patient_ids), RpmEnrolment.ended_on.is_(None)
        )
    )
    for pid, programs in enrolments.all():
        out[pid].programs.extend(programs or [])
    overrides = await session.execute(
        select(ThresholdOverride)
        .where(ThresholdOverride.patient_id.in_(patient_ids))
        .order_by(ThresholdOverride.effective_from, ThresholdOverride.id)
    )
    for o in overrides.scalars():
        out[o.patient_id].overrides.append(
            OverrideVersion(
                o.rule_code,
                o.params,
                o.confirm_minutes,
                o.enabled,
                o.effective_from,
                o.effective_to,
                o.reason,
                o.set_by_user_id,
            )
        )
    return out


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)


async def open_alert(
    session: AsyncSession,
    *,
    org_id: int,
    patient_id: int,
    rule: Rule,
    detail: str,
    measured_at: datetime | None,
) -> tuple[Alert, bool]:
    """The open alert of (patient, rule), created if there is none. Returns (alert, created)."""
    key = f"{patient_id}:{rule.code}"
    now = utc_now()
    deadline = TIER_DEADLINE[rule.tier]
    stmt = (
        _insert(session, Alert.__table__)
        .values(
            org_id=org_id,
            patient_id=patient_id,
            rule_code=rule.code,
            tier=str(rule.tier),
            status=str(AlertStatus.OPEN),
            open_key=key,
            pool="nurses",
            title=rule.title,
            detail=detail[:500],
            first_measured_at=measured_at,
            last_measured_at=measured_at,
            reading_count=0,
            created_at=now,
            deadline_at=now + deadline if deadline is not None else None,
        )
        .on_conflict_do_nothing(index_elements=["open_key"])
        .returning(Alert.__table__.c.id)
    )
    new_id = (await session.execute(stmt)).scalar_one_or_none()
    alert = (
        await session.execute(
            select(Alert).where(Alert.id == new_id if new_id is not None else Alert.open_key == key)
        )
    ).scalar_one()
    return alert, new_id is not None


async def _attach(
    session: AsyncSession, alert: Alert, reading_ids: Sequence[int], times: Sequence[datetime]
) -> None:
    stmt = _insert(session, AlertReading.__table__).on_conflict_do_nothing()
    await session.execute(stmt, [{"alert_id": alert.id, "reading_id": rid} for rid in reading_ids])
    alert.reading_count = (alert.reading_count or 0) + len(reading_ids)
    for t in times:
        if alert.first_measured_at is None or t < alert.first_measured_at:
            alert.first_measured_at = t
        if alert.last_measured_at is None or t > alert.last_measured_at:
            alert.last_measured_at = t


class _History:
    """Readings of one patient and kind around the batch, loaded once when a rule needs them."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, Kind], list[tuple[int, datetime, float, float | None]]] = {}

    async def get(
        self, session: AsyncSession, patient_id: int, kind: Kind, start: datetime, end: datetime
    ) -> list[tuple[int, datetime, float, float | None]]:
        key = (patient_id, kind)
        if key not in self._cache:
            rows = await session.execute(
                select(Reading.id, Reading.measured_at, Reading.value, Reading.value2)
                .where(
                    Reading.patient_id == patient_id,
                    Reading.kind == str(kind),
                    Reading.measured_at >= start,
                    Reading.measured_at <= end,
                )
                .order_by(Reading.measured_at)
            )
            self._cache[key] = [(r[0], r[1], r[2], r[3]) for r in rows.all()]
        return self._cache[key]


async def evaluate(session: AsyncSession, new_rows: Sequence[tuple[int, Candidate]]) -> list[int]:
    """Run the rules on newly stored readings, each as of its own measured time. Returns the ids of the
    readings that opened an alert (one per alert opened)."""
    by_patient: dict[int, list[tuple[int, Candidate]]] = defaultdict(list)
    for rid, c in new_rows:
        by_patient[c.patient_id].append((rid, c))
    patient_rules = await load_patient_rules(session, list(by_patient))
    open_rows = await session.execute(
        select(Alert).where(Alert.patient_id.in_(list(by_patient)), Alert.open_key.is_not(None))
    )
    open_by: dict[tuple[int, str], Alert] = {(a.patient_id, a.rule_code): a for a in open_rows.scalars()}
    history = _History()
    opened: list[int] = []
    for patient_id, rows in by_patient.items():
        rows.sort(key=lambda item: item[1].measured_at)
        org_id = rows[0][1].org_id
        ctx = patient_rules[patient_id]
        missing = open_by.get((patient_id, MISSING_DATA))
        if missing is not None:
            _resolve_system(missing, "Readings resumed.")
            publish_alert(session, missing, "resolved")
        kinds = {c.kind for _, c in rows}
        first_t, last_t = rows[0][1].measured_at, rows[-1][1].measured_at
        attach: dict[int, tuple[Alert, list[int], list[datetime]]] = {}
        for kind in kinds:
            candidates = [(rid, c) for rid, c in rows if c.kind is kind]
            groups: dict[str, list[Rule]] = defaultdict(list)
            for rule in DEFAULT_RULES:
                if kind in rule.kinds and rule.check != "missing_data":
                    groups[rule.group].append(rule)
            for group_rules in groups.values():
                for rid, c in candidates:
                    for base in group_rules:  # most severe first; the first that qualifies wins
                        rule = ctx.rule(base, c.measured_at)
                        if not rule.enabled:
                            continue
                        detail = await _qualifies(session, history, rule, patient_id, c, first_t, last_t)
                        if detail is None:
                            continue
                        alert = open_by.get((patient_id, rule.code))
                        partner: list[tuple[int, datetime]] = []
                        if alert is None and rule.confirm_minutes:
                            partner = await _confirmation(session, history, rule, patient_id, rid, c)
                            if not partner:
                                break  # awaiting a confirming repeat; a less severe rule does not fire either
                        if alert is None:
                            alert, created = await open_alert(
                                session,
                                org_id=org_id,
                                patient_id=patient_id,
                                rule=rule,
                                detail=detail,
                                measured_at=c.measured_at,
                            )
                            open_by[(patient_id, rule.code)] = alert
                            if created:
                                opened.append(rid)
                                publish_alert(session, alert, "opened")
                        slot = attach.setdefault(alert.id, (alert, [], []))
                        slot[1].append(rid)
                        slot[2].append(c.measured_at)
                        for pid, pt in partner:
                            slot[1].append(pid)
                            slot[2].append(pt)
                        break
        for alert, ids, times in attach.values():
            unique = sorted(set(ids))
            await _attach(session, alert, unique, times)
    await session.flush()
    return opened


async def _qualifies(
    session: AsyncSession,
    history: _History,
    rule: Rule,
    patient_id: int,
    c: Candidate,
    first_t: datetime,
    last_t: datetime,
) -> str | None:
    if rule.check == "threshold":
        return threshold_hit(rule, c.kind, c.value, c.value2, c.unit)
    if rule.check == "weight_gain":
        week = timedelta(
            hours=max(r.params.get("window_hours", 0) for r in DEFAULT_RULES if r.check == "weight_gain")
        )
        window = max(week, timedelta(hours=rule.params["window_hours"]))
        rows = await history.get(session, patient_id, c.kind, first_t - window, last_t)
        return weight_gain_hit(rule, c.measured_at, c.value, [(t, v) for _, t, v, _ in rows])
    return None


async def _confirmation(
    session: AsyncSession, history: _History, rule: Rule, patient_id: int, rid: int, c: Candidate
) -> list[tuple[int, datetime]]:
    """Another reading of the same kind within the confirmation window that also qualifies (late and
    out-of-order repeats count: the window is centred on the measured time)."""
    assert rule.confirm_minutes
    window = timedelta(minutes=rule.confirm_minutes)
    rows = await history.get(
        session, patient_id, c.kind, c.measured_at - timedelta(days=1), c.measured_at + timedelta(days=1)
    )
    found = []
    for other_id, t, value, value2 in rows:
        if other_id == rid or abs(t - c.measured_at) > window:
            continue
        if threshold_hit(rule, c.kind, value, value2, c.unit) is not None:
            found.append((other_id, t))
    return found


def _resolve_system(alert: Alert, note: str) -> None:
    now = utc_now()
    alert.status = AlertStatus.RESOLVED
    alert.resolved_at = now
    alert.resolution_note = note
    alert.open_key = None


def rule_for(code: str) -> Rule:
    return RULES_BY_CODE[code]


def tier_order() -> Any:
    """SQL expression ranking tiers, immediate first."""
    from sqlalchemy import case

    return case(
        (Alert.tier == str(Tier.IMMEDIATE), 0),
        (Alert.tier == str(Tier.SAME_DAY), 1),
        (Alert.tier == str(Tier.WITHIN_24H), 2),
        else_=3,
    )


def overdue_filter(now: datetime) -> Any:
    return and_(
        Alert.status == str(AlertStatus.OPEN),
        Alert.deadline_at.is_not(None),
        Alert.deadline_at <= now,
        Alert.escalated_at.is_(None),
    )


def not_resolved() -> Any:
    return or_(Alert.status == str(AlertStatus.OPEN), Alert.status == str(AlertStatus.ACKNOWLEDGED))


async def open_alert_counts(session: AsyncSession, patient_ids: Sequence[int]) -> dict[int, int]:
    rows = await session.execute(
        select(Alert.patient_id, func.count(Alert.id))
        .where(Alert.patient_id.in_(patient_ids), not_resolved())
        .group_by(Alert.patient_id)
    )
    return dict(rows.all())
