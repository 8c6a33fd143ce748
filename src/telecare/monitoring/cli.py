"""CLI for monitoring: integrator quick start (device keys, Nightscout secrets) and the clock-driven sweep."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.config import Settings

devices_app = typer.Typer(help="Devices and device keys for RPM integrations.", no_args_is_help=True)
nightscout_app = typer.Typer(help="Nightscout-compatible uploads.", no_args_is_help=True)
monitoring_app = typer.Typer(help="Remote monitoring jobs.", no_args_is_help=True)


async def _patient(session: AsyncSession, mrn: str, org: str | None) -> object:
    from telecare.cli import _org, fail
    from telecare.identity.models import Patient

    organization = await _org(session, org)
    patient = (
        await session.execute(select(Patient).where(Patient.org_id == organization.id, Patient.mrn == mrn))
    ).scalar_one_or_none()
    if patient is None:
        fail(f"no patient with MRN {mrn}")
    return patient


def _audit(
    session: AsyncSession, settings: Settings, patient: object, resource: str, detail: dict[str, object]
) -> object:
    from telecare.audit import service as audit
    from telecare.audit.models import AuditAction, Purpose

    return audit.record(
        session,
        audit.SYSTEM_ACTOR,
        key=settings.secret("audit_hmac_key").encode(),
        action=AuditAction.CREATE,
        resource_type=resource,
        patient_id=patient.id,  # type: ignore[attr-defined]
        org_id=patient.org_id,  # type: ignore[attr-defined]
        purpose=Purpose.OPERATIONS,
        detail=detail,
    )


@devices_app.command("create-key")
def create_key(
    patient_mrn: Annotated[str, typer.Option("--patient-mrn", help="MRN of the patient whose devices post")],
    org: Annotated[str | None, typer.Option(help="Organization slug")] = None,
) -> None:
    """Issue a device key for the patient's assigned devices (a gateway device is registered when the patient
    has none). The key is the last line printed; it is stored only as a hash."""
    from telecare.cli import run_in_uow
    from telecare.monitoring import devices as monitoring_devices

    async def go(session: AsyncSession, settings: Settings) -> tuple[str, list[str]]:
        patient = await _patient(session, patient_mrn, org)
        key, devices = await monitoring_devices.quick_start_key(session, patient=patient)  # type: ignore[arg-type]
        await _audit(session, settings, patient, "DeviceKey", {"devices": [d.id for d in devices]})  # type: ignore[misc]
        return key, [f"{d.serial} ({d.device_type})" for d in devices]

    key, devices = run_in_uow(go)
    typer.echo(f"device key for patient {patient_mrn}; it may post for: {', '.join(devices)}")
    typer.echo("Send it as 'Authorization: Bearer <key>'. It is shown once:")
    typer.echo(key)


@nightscout_app.command("create-secret")
def create_secret(
    patient_mrn: Annotated[str, typer.Option("--patient-mrn", help="MRN of the patient")],
    org: Annotated[str | None, typer.Option(help="Organization slug")] = None,
) -> None:
    """Issue a Nightscout API secret for the patient (revokes the previous one). Uploaders send its SHA-1 in
    the api-secret header. The secret is the last line printed."""
    from telecare.cli import run_in_uow
    from telecare.monitoring import devices as monitoring_devices

    async def go(session: AsyncSession, settings: Settings) -> str:
        patient = await _patient(session, patient_mrn, org)
        secret = await monitoring_devices.issue_nightscout_secret(session, patient=patient)  # type: ignore[arg-type]
        await _audit(session, settings, patient, "NightscoutSecret", {})  # type: ignore[misc]
        return secret

    secret = run_in_uow(go)
    typer.echo(f"Nightscout API secret for patient {patient_mrn} (base URL: <telecare>/ , shown once):")
    typer.echo(secret)


@monitoring_app.command("run-tasks")
def run_tasks() -> None:
    """One sweep: escalate overdue alerts to physicians and open missing-data alerts."""
    import asyncio

    from telecare.core.db import Database
    from telecare.domains import install as install_domains
    from telecare.monitoring import tasks

    install_domains()

    async def main() -> tasks.TaskReport:
        db = Database(Settings())
        try:
            return await tasks.run_due(db)
        finally:
            await db.dispose()

    report = asyncio.run(main())
    typer.echo(f"escalated {report.escalated} alert(s); opened {report.missing_opened} missing-data alert(s)")
