"""Nightscout-compatible door: `POST /api/v1/entries` and the read-back an uploader checks
(`GET /api/v1/entries.json`, `GET /api/v1/entries/sgv.json`, newest first, `count`).

Authenticated by `api-secret: SHA1(secret)` like cgm-remote-monitor, so xDrip+, nightscout-connect and the
like send here unchanged. Nightscout upserts on time and type ("one reading per timestamp per type",
docs/security.md#idempotent-ingestion) and uploaders change their `device` string between versions (Loop
issue 1788), so all of a patient's Nightscout uploads share one device identity and dedupe on exact time and
kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Resource
from telecare.audit import service as audit
from telecare.audit.models import AuditAction
from telecare.auth.dependencies import DbSession
from telecare.core.errors import FieldError, ValidationFailed
from telecare.monitoring.api import batch_response, json_body
from telecare.monitoring.codes import Kind
from telecare.monitoring.credentials import NightscoutAuth, NightscoutCaller
from telecare.monitoring.ingest import Candidate, Outcome, check_time, normalise_values, store
from telecare.monitoring.models import Reading, ReadingSource

router = APIRouter(prefix="/api/v1", tags=["nightscout"])
NIGHTSCOUT_DEVICE = "nightscout"
MAX_COUNT = 10_000
_KIND_BY_TYPE = {"sgv": Kind.CGM, "mbg": Kind.GLUCOSE}


def _entry_time(prefix: str, entry: dict[str, Any]) -> tuple[datetime | None, int, list[FieldError]]:
    """Nightscout `date` is epoch milliseconds (authoritative); `dateString` carries the local offset."""
    date_ms = entry.get("date")
    offset = 0
    moment: datetime | None = None
    date_string = entry.get("dateString")
    if isinstance(date_string, str):
        try:
            parsed = datetime.fromisoformat(date_string.replace("Z", "+00:00"))
            if parsed.utcoffset() is not None:
                moment = parsed
                offset = int(parsed.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
        except ValueError:
            if date_ms is None:
                return None, 0, [FieldError(f"{prefix}dateString", "not an ISO 8601 date-time")]
    if isinstance(date_ms, int | float) and not isinstance(date_ms, bool):
        if not 0 < date_ms < 10**14:
            return None, 0, [FieldError(f"{prefix}date", "epoch milliseconds out of range")]
        moment = datetime.fromtimestamp(date_ms / 1000, UTC).astimezone(timezone_of(offset))
    elif date_ms is not None:
        return None, 0, [FieldError(f"{prefix}date", "must be epoch milliseconds")]
    if moment is None:
        return None, 0, [FieldError(f"{prefix}date", "required (epoch milliseconds)")]
    return moment, offset, check_time(prefix, moment)


def timezone_of(offset_minutes: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(minutes=offset_minutes))


def parse_entries(caller: NightscoutCaller, entries: list[Any]) -> tuple[list[Candidate], list[Outcome]]:
    candidates: list[Candidate] = []
    rejected: list[Outcome] = []
    for i, entry in enumerate(entries):
        prefix = f"{i}."
        if not isinstance(entry, dict):
            rejected.append(Outcome(i, "rejected", errors=[FieldError(f"{i}", "expected an object")]))
            continue
        kind = _KIND_BY_TYPE.get(str(entry.get("type", "sgv")))
        if kind is None:
            rejected.append(
                Outcome(
                    i, "rejected", errors=[FieldError(f"{prefix}type", "only sgv and mbg entries are stored")]
                )
            )
            continue
        field_name = "sgv" if kind is Kind.CGM else "mbg"
        raw = entry.get(field_name)
        moment, offset, errors = _entry_time(prefix, entry)
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            errors.append(FieldError(f"{prefix}{field_name}", "must be a number (mg/dL)"))
            raw = None
        unit = "mmol/L" if str(entry.get("units", "mg/dl")).lower().startswith("mmol") else "mg/dL"
        values = normalise_values(prefix, kind, unit, value=float(raw)) if raw is not None else []
        if isinstance(values, list):
            errors += [FieldError(e.field.replace(".value", f".{field_name}"), e.message) for e in values]
        if errors or moment is None or isinstance(values, list):
            rejected.append(Outcome(i, "rejected", errors=errors))
            continue
        device = entry.get("device")
        direction = entry.get("direction")
        candidates.append(
            Candidate(
                index=i,
                org_id=caller.org_id,
                patient_id=caller.patient_id,
                device_id=None,
                device_ident=NIGHTSCOUT_DEVICE,
                source=ReadingSource.NIGHTSCOUT,
                kind=kind,
                value=values.value,
                value2=None,
                unit=values.unit,
                orig_value=values.orig_value,
                orig_value2=None,
                orig_unit=values.orig_unit,
                measured_at=moment,
                utc_offset_minutes=offset,
                device_label=str(device)[:100] if device is not None else None,
                trend=str(direction)[:20] if direction is not None else None,
            )
        )
    return candidates, rejected


@router.post("/entries")
@router.post("/entries.json", include_in_schema=False)
async def post_entries(request: Request, session: DbSession, caller: NightscoutAuth) -> Response:
    """Nightscout `entries`: one object or an array of `sgv` / `mbg` entries (`date` in epoch ms,
    `dateString`, `device`, `direction`). Replays are stored once."""
    body = await json_body(request)
    entries = body if isinstance(body, list) else [body]
    if not entries or len(entries) > request.app.state.settings.rpm_max_batch:
        raise ValidationFailed(errors=[FieldError("body", "1 to rpm_max_batch entries")])
    candidates, rejected = parse_entries(caller, entries)
    result = await store(
        session, candidates, actor=caller.actor(), audit_key=access.audit_key(session), rejected=rejected
    )
    return batch_response(result, len(entries))


def to_entry(r: Reading) -> dict[str, Any]:
    local = r.measured_at.astimezone(timezone_of(r.utc_offset_minutes))
    entry: dict[str, Any] = {
        "_id": str(r.id),
        "type": "sgv" if r.kind == Kind.CGM else "mbg",
        "date": int(r.measured_at.timestamp() * 1000),
        "dateString": local.isoformat(timespec="milliseconds"),
        "sysTime": local.isoformat(timespec="milliseconds"),
        "utcOffset": r.utc_offset_minutes,
        "device": r.device_label or NIGHTSCOUT_DEVICE,
    }
    value = round(r.value)
    if r.kind == Kind.CGM:
        entry["sgv"] = value
        entry["direction"] = r.trend or "NONE"
    else:
        entry["mbg"] = value
    return entry


async def _entries(
    session: AsyncSession, caller: NightscoutCaller, kinds: list[Kind], count: int
) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(Reading)
        .where(Reading.patient_id == caller.patient_id, Reading.kind.in_([str(k) for k in kinds]))
        .order_by(Reading.measured_at.desc(), Reading.id.desc())
        .limit(count)
    )
    readings = list(rows.scalars())
    await audit.record(
        session,
        caller.actor(),
        action=AuditAction.SEARCH,
        resource_type=str(Resource.OBSERVATION),
        patient_id=caller.patient_id,
        org_id=caller.org_id,
        detail={"count": len(readings), "door": "nightscout"},
    )
    return [to_entry(r) for r in readings]


@router.get("/entries.json")
async def get_entries(
    session: DbSession, caller: NightscoutAuth, count: Annotated[int, Query(ge=1, le=MAX_COUNT)] = 10
) -> Response:
    """The patient's glucose entries (sgv and mbg), newest first."""
    data = await _entries(session, caller, [Kind.CGM, Kind.GLUCOSE], count)
    return Response(orjson.dumps(data), media_type="application/json")


@router.get("/entries/sgv.json")
async def get_sgv(
    session: DbSession, caller: NightscoutAuth, count: Annotated[int, Query(ge=1, le=MAX_COUNT)] = 10
) -> Response:
    """The patient's sensor glucose entries, newest first."""
    data = await _entries(session, caller, [Kind.CGM], count)
    return Response(orjson.dumps(data), media_type="application/json")
