"""FHIR R4 surface for monitoring: CapabilityStatement, Patient read/search, Observation create/read/search,
and transaction/batch Bundles of Observations. `application/fhir+json`; errors are OperationOutcome
(core/errors.py renders them for every path under /fhir/)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from telecare import __version__
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession, public
from telecare.auth.principal import Principal
from telecare.core.errors import FieldError, NotFound, ValidationFailed
from telecare.core.params import PathId
from telecare.core.time import utc_now
from telecare.fhir.observation import (
    MRN_SYSTEM,
    codes_matching,
    observation_resource,
    parse_instant,
    parse_observation,
    patient_ref_id,
    patient_resource,
)
from telecare.identity import service as identity
from telecare.identity.models import Patient
from telecare.monitoring import queries as readings
from telecare.monitoring import service
from telecare.monitoring.credentials import IngestCaller
from telecare.monitoring.ingest import Outcome
from telecare.monitoring.models import Reading, ReadingSource
from telecare.monitoring.service import Draft

router = APIRouter(prefix="/fhir/R4", tags=["fhir"])
FHIR_JSON = "application/fhir+json"
_DATE_PARAM = re.compile(
    r"^(eq|ge|gt|le|lt)?([0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2}))?)$"
)


def _fhir_body_schema(resource_type: str) -> dict[str, Any]:
    """OpenAPI for a body the route parses itself (FHIR resources are open-ended; the parser names each
    offending element in the OperationOutcome), so the fuzz sends generated bodies to these routes too."""
    schema = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "example": resource_type}},
    }
    return {"requestBody": {"required": True, "content": {FHIR_JSON: {"schema": schema}}}}


def fhir_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def _base(request: Request) -> str:
    return str(request.app.state.settings.base_url).rstrip("/") + "/fhir/R4"


@router.get("/metadata", dependencies=[Depends(public)])
async def metadata(request: Request) -> Response:
    """CapabilityStatement: what this server supports."""
    body = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": utc_now().date().isoformat(),
        "publisher": "Telecare",
        "kind": "instance",
        "software": {"name": "Telecare", "version": __version__},
        "implementation": {"description": "Telecare remote patient monitoring", "url": _base(request)},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Bearer API tokens with SMART v2 scopes (user/Observation.crs), "
                    "or device keys "
                    "(Bearer tcdk_...) for posting readings."
                },
                "resource": [
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [{"name": "identifier", "type": "token"}],
                    },
                    {
                        "type": "Observation",
                        "supportedProfile": [
                            "http://hl7.org/fhir/StructureDefinition/vitalsigns",
                            "http://hl7.org/fhir/StructureDefinition/bp",
                            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-pulse-oximetry",
                        ],
                        "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}],
                        "searchParam": [
                            {"name": "patient", "type": "reference"},
                            {"name": "code", "type": "token"},
                            {"name": "date", "type": "date"},
                            {"name": "_count", "type": "number"},
                        ],
                    },
                ],
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }
    return fhir_response(body)


async def _fhir_body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ValidationFailed(
            "The body is not valid JSON.", errors=[FieldError("body", "invalid JSON")]
        ) from None


async def _reading(session: Any, reading_id: int) -> Reading:
    reading = await session.get(Reading, reading_id)
    assert isinstance(reading, Reading)
    return reading


@router.post("/Observation", openapi_extra=_fhir_body_schema("Observation"))
async def create_observation(request: Request, session: DbSession, caller: IngestCaller) -> Response:
    """Create one Observation (201; a replay of a stored reading answers 200 with the stored resource)."""
    draft = parse_observation(0, "", await _fhir_body(request))
    if isinstance(draft, list):
        raise ValidationFailed("The Observation is not valid.", errors=draft)
    if isinstance(caller, Principal) and draft.patient_id is not None and draft.device_serial is None:
        # A user naming the subject: authorised like the REST manual door (404 outside reach, 403 without
        # the grant, the denial audited), not a 422 "patient not found" that the REST API would answer 404.
        await access.open_patient(
            session,
            caller,
            draft.patient_id,
            resource=Resource.OBSERVATION,
            action=Action.CREATE,
            audit_access=False,
        )
    result = await service.resolve_and_store(
        session, caller, [draft], [], source=ReadingSource.FHIR, device_field="device.identifier.value"
    )
    outcome = result.outcomes[0]
    if outcome.status == "rejected" or outcome.id is None:
        raise ValidationFailed("The Observation was not stored.", errors=outcome.errors)
    body = observation_resource(await _reading(session, outcome.id))
    status = 201 if outcome.status == "created" else 200
    return fhir_response(body, status, {"Location": f"{_base(request)}/Observation/{outcome.id}"})


@router.post("", openapi_extra=_fhir_body_schema("Bundle"))
async def bundle(request: Request, session: DbSession, caller: IngestCaller) -> Response:
    """A `transaction` (all or nothing) or `batch` (each entry on its own) Bundle of Observation POSTs."""
    body = await _fhir_body(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise ValidationFailed(errors=[FieldError("resourceType", "must be Bundle")])
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise ValidationFailed(errors=[FieldError("type", "must be transaction or batch")])
    entries = body.get("entry") if isinstance(body.get("entry"), list) else []
    if not entries or len(entries) > request.app.state.settings.rpm_max_batch:
        raise ValidationFailed(errors=[FieldError("entry", "1 to rpm_max_batch entries")])
    drafts: list[Draft] = []
    rejected: list[Outcome] = []
    for i, entry in enumerate(entries):
        prefix = f"entry[{i}]."
        req = entry.get("request") if isinstance(entry, dict) else None
        if (
            not isinstance(req, dict)
            or req.get("method") != "POST"
            or str(req.get("url", "")).split("?")[0] != "Observation"
        ):
            rejected.append(
                Outcome(i, "rejected", errors=[FieldError(f"{prefix}request", "only POST Observation")])
            )
            continue
        parsed = parse_observation(i, prefix + "resource.", entry.get("resource"))
        if isinstance(parsed, list):
            rejected.append(Outcome(i, "rejected", errors=parsed))
        else:
            drafts.append(parsed)
    if kind == "transaction" and rejected:
        raise ValidationFailed(
            "The transaction was not applied.", errors=[e for o in rejected for e in o.errors]
        )
    result = await service.resolve_and_store(
        session,
        caller,
        drafts,
        rejected,
        source=ReadingSource.FHIR,
        device_field="resource.device.identifier.value",
        subject_field="resource.subject",
    )
    failures = [o for o in result.outcomes if o.status == "rejected"]
    if kind == "transaction" and failures:
        # Raising rolls back the whole unit of work: nothing of the transaction is stored.
        raise ValidationFailed(
            "The transaction was not applied.", errors=[e for o in failures for e in o.errors]
        )
    base = _base(request)
    out_entries: list[dict[str, Any]] = []
    for o in result.outcomes:
        if o.status == "rejected":
            out_entries.append(
                {
                    "response": {
                        "status": "422 Unprocessable Entity",
                        "outcome": {
                            "resourceType": "OperationOutcome",
                            "issue": [
                                {
                                    "severity": "error",
                                    "code": "invalid",
                                    "diagnostics": f"{e.field}: {e.message}",
                                    "expression": [e.field],
                                }
                                for e in o.errors
                            ],
                        },
                    }
                }
            )
        else:
            out_entries.append(
                {
                    "fullUrl": f"{base}/Observation/{o.id}",
                    "response": {
                        "status": "201 Created" if o.status == "created" else "200 OK",
                        "location": f"Observation/{o.id}",
                    },
                }
            )
    return fhir_response({"resourceType": "Bundle", "type": f"{kind}-response", "entry": out_entries})


@router.get("/Patient/{patient_id}")
async def read_patient(patient_id: PathId, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Read a Patient (audited)."""
    patient = await access.open_patient(
        session, principal, patient_id, resource=Resource.PATIENT, action=Action.READ
    )
    return fhir_response(patient_resource(patient))


def _page_url(base: str, path: str, params: dict[str, Any], count: int, offset: int) -> str:
    query = urlencode({**params, "_count": count, "_offset": offset}, doseq=True)
    return f"{base}/{path}?{query}"


def _searchset(
    request: Request,
    resources: list[dict[str, Any]],
    total: int,
    params: dict[str, Any],
    offset: int,
    count: int,
) -> dict[str, Any]:
    base = _base(request)
    path = request.url.path.rsplit("/", 1)[-1]
    links = [
        {
            "relation": "self",
            "url": _page_url(base, path, params, count, offset),
        }
    ]
    if offset + count < total:
        links.append(
            {
                "relation": "next",
                "url": _page_url(base, path, params, count, offset + count),
            }
        )
    if offset > 0:
        links.append(
            {
                "relation": "previous",
                "url": _page_url(base, path, params, count, max(0, offset - count)),
            }
        )
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


@router.get("/Patient")
async def search_patients(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    identifier: Annotated[str, Query(max_length=200)],
) -> Response:
    """Search Patients by `identifier=SYSTEM|MRN` (or a bare MRN)."""
    system, sep, value = identifier.rpartition("|")
    rows: list[Patient] = []
    if not (sep and system and system != MRN_SYSTEM):
        rows, _ = await identity.search_patients(session, principal, mrn=value, limit=1000)
    return fhir_response(
        _searchset(
            request,
            [patient_resource(p) for p in rows],
            len(rows),
            {"identifier": identifier},
            0,
            max(1, len(rows)),
        )
    )


@router.get("/Observation/{reading_id}")
async def read_observation(reading_id: PathId, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Read an Observation (audited)."""
    reading = await session.get(Reading, reading_id)
    if reading is None or reading.org_id != principal.org_id:
        access.reach_for(principal, Resource.OBSERVATION, Action.READ)  # no grant: 403 for any id
        raise NotFound("No such Observation.")
    await access.open_patient(
        session,
        principal,
        reading.patient_id,
        resource=Resource.OBSERVATION,
        action=Action.READ,
        resource_id=reading_id,
    )
    return fhir_response(observation_resource(reading))


def _date_bounds(values: list[str]) -> list[tuple[str, datetime]]:
    """FHIR `date` parameters (`ge2026-11-01`, `lt2026-11-27T10:00:00Z`) as (prefix, instant) pairs."""
    out = []
    for n, raw in enumerate(values):
        m = _DATE_PARAM.match(raw)
        if m is None:
            raise ValidationFailed(
                errors=[FieldError(f"date[{n}]", "use e.g. ge2026-11-01 or lt2026-11-27T10:00:00Z")]
            )
        prefix = m.group(1) or "eq"
        text = m.group(2)
        moment = parse_instant(text if "T" in text else text + "T00:00:00+00:00")
        if moment is None:  # e.g. month 13: the pattern checks the shape only
            raise ValidationFailed(errors=[FieldError(f"date[{n}]", "not a calendar date and time")])
        if moment.tzinfo is None:
            raise ValidationFailed(errors=[FieldError(f"date[{n}]", "a time needs a UTC offset")])
        out.append((prefix, moment))
    return out


@router.get("/Observation")
async def search_observations(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    patient: Annotated[str | None, Query(max_length=40)] = None,
    code: Annotated[str | None, Query(max_length=200)] = None,
    date: Annotated[list[str] | None, Query()] = None,
    count: Annotated[int, Query(alias="_count", ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=10_000_000)] = 0,
) -> Response:
    """Search Observations by patient, code (`[system|]code`, comma = or) and date (`ge`/`lt`...),
    newest first, with `next`/`previous` paging links."""
    params: dict[str, Any] = {}
    pid: int | None = None
    if patient is not None:
        pid = patient_ref_id(patient if "/" in patient else f"Patient/{patient}")
        if pid is None:
            raise ValidationFailed(errors=[FieldError("patient", "Patient id or Patient/{id}")])
        params["patient"] = patient
    wanted: list[str] | None = None
    if code:
        wanted = []
        for token in code.split(","):
            wanted += codes_matching(token.rpartition("|")[2])
        params["code"] = code
    bounds = _date_bounds(date) if date else []
    if date:
        params["date"] = date
    total, rows = await readings.search_readings(
        session,
        principal,
        patient_id=pid,
        codes=wanted,
        measured=bounds,
        offset=offset,
        limit=count,
        query_params=sorted(params),
    )
    return fhir_response(
        _searchset(request, [observation_resource(r) for r in rows], total, params, offset, count)
    )
