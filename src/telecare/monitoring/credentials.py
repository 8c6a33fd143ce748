"""Authenticators for machines: device keys (gateways, vendor integrations) and Nightscout API secrets.

Both are declared with `auth_dependency`, hashed at rest, revocable and rate limited per credential with a
token bucket (per worker; the limit is a budget for a misbehaving uploader, not a security boundary)."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.audit.service import Actor
from telecare.auth.dependencies import Authenticated, DbSession, auth_dependency, client_addr
from telecare.auth.principal import Principal
from telecare.config import Settings
from telecare.core.crypto import token_digest
from telecare.core.errors import NotAuthenticated, TooManyRequests
from telecare.core.time import utc_now
from telecare.identity.models import Patient, User
from telecare.monitoring.models import Device, DeviceAssignment, DeviceKey, NightscoutSecret

DEVICE_KEY_PREFIX = "tcdk_"
_SHA1_HEX = re.compile(r"^[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class DeviceCaller:
    """A device key: may post readings only for the devices linked to it."""

    key_id: int
    org_id: int
    device_ids: frozenset[int]
    client_addr: str | None = None

    def actor(self) -> Actor:
        return Actor(None, self.org_id, "device", f"device_key:{self.key_id}", self.client_addr)


@dataclass(frozen=True)
class NightscoutCaller:
    """A Nightscout uploader: posts and reads entries of one patient."""

    secret_id: int
    org_id: int
    patient_id: int
    client_addr: str | None = None

    def actor(self) -> Actor:
        return Actor(None, self.org_id, "device", f"nightscout:{self.secret_id}", self.client_addr)


class _Buckets:
    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, per_minute: int) -> None:
        now = time.monotonic()
        tokens, last = self._state.get(key, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - last) * per_minute / 60.0)
        if tokens < 1.0:
            self._state[key] = (tokens, now)
            retry = max(1, int((1.0 - tokens) * 60.0 / per_minute) + 1)
            raise TooManyRequests(
                "Rate limit for this credential exceeded.", headers={"Retry-After": str(retry)}
            )
        self._state[key] = (tokens - 1.0, now)


buckets = _Buckets()


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def new_device_key(key_id: int, secret: str) -> str:
    return f"{DEVICE_KEY_PREFIX}{key_id}_{secret}"


async def device_caller_for(session: AsyncSession, key: str, addr: str | None) -> DeviceCaller | None:
    record = (
        await session.execute(select(DeviceKey).where(DeviceKey.key_hash == token_digest(key)))
    ).scalar_one_or_none()
    if record is None or record.revoked_at is not None:
        return None
    now = utc_now()
    if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
        await session.execute(update(DeviceKey).where(DeviceKey.id == record.id).values(last_used_at=now))
    # A device in use by a patient whose account is disabled stops posting through any key (like their
    # sessions, tokens and Nightscout secret); its other devices keep working.
    disabled_patient = (
        select(DeviceAssignment.device_id)
        .join(Patient, Patient.id == DeviceAssignment.patient_id)
        .join(User, User.id == Patient.user_id)
        .where(DeviceAssignment.ended_at.is_(None), User.is_active.is_(False))
    )
    ids = (
        (
            await session.execute(
                select(Device.id).where(Device.key_id == record.id, Device.id.not_in(disabled_patient))
            )
        )
        .scalars()
        .all()
    )
    return DeviceCaller(record.id, record.org_id, frozenset(ids), addr)


def nightscout_digest(api_secret_sha1: str) -> str:
    return token_digest(api_secret_sha1.strip().lower())


def sha1_hex(secret: str) -> str:
    """What Nightscout uploaders put in `api-secret`: the SHA-1 hex of the secret."""
    return hashlib.sha1(secret.encode()).hexdigest()  # noqa: S324 - the Nightscout wire protocol


# Verified keys are remembered for a few seconds so a device upload does not open the request's
# transaction before its body is parsed (and so uploads can be coalesced into one commit). A revocation or a
# device reassignment reaches other workers within KEY_CACHE_SECONDS; this worker forgets at once.
KEY_CACHE_SECONDS = 5.0
_key_cache: dict[str, tuple[DeviceCaller, float]] = {}


def forget_key(key_id: int) -> None:
    for digest, (caller, _) in list(_key_cache.items()):
        if caller.key_id == key_id:
            _key_cache.pop(digest, None)


async def _cached_device_caller(request: Request, token: str) -> DeviceCaller | None:
    digest = token_digest(token)
    now = time.monotonic()
    hit = _key_cache.get(digest)
    addr = client_addr(request)
    if hit is not None and hit[1] > now:
        return DeviceCaller(hit[0].key_id, hit[0].org_id, hit[0].device_ids, addr)
    from telecare.core.db import Database

    db: Database = request.app.state.db
    async with db.unit_of_work() as session:  # short and separate: the request's own stays unopened
        caller = await device_caller_for(session, token, addr)
    if caller is not None:
        if len(_key_cache) > 10_000:
            _key_cache.clear()
        _key_cache[digest] = (caller, now + KEY_CACHE_SECONDS)
    return caller


@auth_dependency
async def ingest_caller(request: Request, session: DbSession) -> Principal | DeviceCaller:
    """`Authorization: Bearer tcdk_...` (a device key) or any user credential (session or API token)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token.startswith(DEVICE_KEY_PREFIX):
        caller = await _cached_device_caller(request, token)
        if caller is None:
            raise NotAuthenticated(
                "The device key is invalid or revoked.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        # keyed by digest: unique across databases and workers' restarts
        buckets.take(f"dk:{token_digest(token)[:24]}", _settings(request).rpm_device_requests_per_minute)
        return caller
    user_dependency = Authenticated().dependency
    principal: Principal = await user_dependency(request, session)
    return principal


@auth_dependency
async def nightscout_caller(request: Request, session: DbSession) -> NightscoutCaller:
    """The `api-secret` header: SHA-1 hex of the patient's Nightscout API secret."""
    supplied = request.headers.get("api-secret", "")
    if not _SHA1_HEX.match(supplied):
        raise NotAuthenticated("Send the SHA-1 hex of the API secret in the api-secret header.")
    row = (
        await session.execute(
            select(NightscoutSecret, User.is_active)
            .join(Patient, Patient.id == NightscoutSecret.patient_id)
            .outerjoin(User, User.id == Patient.user_id)
            .where(NightscoutSecret.secret_hash == nightscout_digest(supplied))
        )
    ).one_or_none()
    # A disabled patient's secret stops working with the rest of their credentials (docs/security.md).
    if row is None or row[0].revoked_at is not None or row[1] is False:
        raise NotAuthenticated("The API secret is invalid or revoked.")
    record = row[0]
    buckets.take(f"ns:{record.secret_hash[:24]}", _settings(request).rpm_device_requests_per_minute)
    return NightscoutCaller(record.id, record.org_id, record.patient_id, client_addr(request))


IngestCaller = Annotated[Principal | DeviceCaller, Depends(ingest_caller)]
NightscoutAuth = Annotated[NightscoutCaller, Depends(nightscout_caller)]
